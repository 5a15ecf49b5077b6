// The one place that talks HTTP. Every error of the API is an RFC 9457 problem document
// (application/problem+json) with a stable `code`; it becomes an ApiError so pages can
// branch on `code` and show `detail` (for people) and `errors` (per field).

export const API = '/api/v1';

export class ApiError extends Error {
  constructor({ status = 0, code = 'network', detail, title, errors = [], requestId = null, retryAfter = null }) {
    super(detail || title || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = detail || title || '';
    this.errors = errors;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }

  /** Field errors as a map field -> message (several messages for one field are joined). */
  fieldErrors() {
    const out = {};
    for (const e of this.errors || []) {
      out[e.field] = out[e.field] ? `${out[e.field]} ${e.message}` : e.message;
    }
    return out;
  }
}

/**
 * Send a request. `body` is sent as JSON; `token` adds the bearer header; `raw: true`
 * returns the Response (for downloads). Resolves to parsed JSON, or null for 204.
 */
export async function request(path, { method = 'GET', body, token, raw = false, signal, query } = {}) {
  let url = path.startsWith('/api/') || path.startsWith('http') ? path : `${API}${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  const headers = { accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError({
      status: 0,
      code: 'network',
      detail: 'We could not reach Alcove. Please check your internet connection and try again.',
    });
  }
  if (res.ok) {
    if (raw) return res;
    if (res.status === 204) return null;
    const type = res.headers.get('content-type') || '';
    return type.includes('json') ? res.json() : res.text();
  }
  let problem = {};
  try {
    problem = await res.json();
  } catch {
    problem = {};
  }
  throw new ApiError({
    status: res.status,
    code: problem.code || `http_${res.status}`,
    detail: problem.detail || problem.title || res.statusText,
    title: problem.title,
    errors: Array.isArray(problem.errors) ? problem.errors : [],
    requestId: problem.request_id || res.headers.get('x-request-id'),
    retryAfter: res.headers.get('retry-after'),
  });
}
