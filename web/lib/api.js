// Authenticated API calls: adds the bearer token, and on a 401 `invalid_token` (for example
// a token that expired while the laptop slept) refreshes once and retries.

import { request, ApiError } from './http.js';
import { accessToken, refresh } from './auth.js';
import { t } from './i18n.js';

export { ApiError };

export async function api(path, opts = {}) {
  if (opts.auth === false) return request(path, opts);
  const token = await accessToken();
  try {
    return await request(path, { ...opts, token });
  } catch (err) {
    // An expired token is refreshed once; an idle sign-in is refused at the refresh too,
    // which signs this tab out with the reason.
    if (err instanceof ApiError && err.status === 401 && (err.code === 'invalid_token' || err.code === 'sign_in_idle')) {
      const fresh = await refresh();
      return request(path, { ...opts, token: fresh });
    }
    throw err;
  }
}

/** Public endpoints (directory, client config). */
export function publicApi(path, opts = {}) {
  return request(path, opts);
}

/** Download a file that needs the bearer token (e.g. an .ics) and save it as a blob. */
export async function download(path, filename) {
  const token = await accessToken();
  const res = await request(path, { token, raw: true });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A friendly sentence for an error, for when a page has nothing more specific to say. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return t('error.generic');
  if (err.code === 'network') return t('error.offline');
  if (err.code === 'database_unavailable' || err.code === 'timeout' || err.code === 'server_busy') {
    return t('error.unreachable');
  }
  if (err.code === 'storage_full') return t('error.storage_full');
  if (err.status >= 500) {
    return err.requestId ? t('error.server_ref', { ref: err.requestId }) : t('error.server');
  }
  return err.detail || t('error.generic');
}
