// Authenticated API calls: adds the bearer token, and on a 401 `invalid_token` (for example
// a token that expired while the laptop slept) refreshes once and retries.

import { request, ApiError } from './http.js';
import { accessToken, refresh } from './auth.js';

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
  if (!(err instanceof ApiError)) return 'Something went wrong. Please try again.';
  if (err.code === 'network') return err.detail;
  if (err.code === 'database_unavailable' || err.code === 'timeout' || err.code === 'server_busy') {
    return 'We can\u2019t reach the service right now. Nothing was changed. Please try again in a moment.';
  }
  if (err.code === 'storage_full') {
    return 'The service cannot save anything right now. Nothing was changed. Please try again later; we have been told.';
  }
  if (err.status >= 500) {
    return `Something went wrong on our side. Please try again in a moment.${err.requestId ? ` (Reference: ${err.requestId})` : ''}`;
  }
  return err.detail || 'Something went wrong. Please try again.';
}
