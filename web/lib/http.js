// The one place that talks HTTP. Every error of the API is an RFC 9457 problem document
// (application/problem+json) with a stable `code`; it becomes an ApiError so pages can
// branch on `code` and show `detail` (for people) and `errors` (per field).

import { t } from './i18n.js';

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

// ---- the service being away ------------------------------------------------------------
// When the service cannot answer (its database away, a restart, the network), requests
// that only read are tried again by themselves, and the page says so meanwhile; a change
// (POST, PUT, …) is never sent twice by itself: the person is told and tries again.

/** Problem codes that mean "the service is away for a moment; try again". */
const TRANSIENT = new Set(['database_unavailable', 'timeout', 'server_busy', 'storage_full', 'network']);
/** Delays between tries of a read (ms), at least the server's Retry-After. */
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 8000];

const troubleListeners = new Set();
let inTrouble = false;

/** Call `fn(true)` when the service stops answering and `fn(false)` when it is back. */
export function onServiceTrouble(fn) {
  troubleListeners.add(fn);
  return () => troubleListeners.delete(fn);
}

function setTrouble(on) {
  if (on === inTrouble) return;
  inTrouble = on;
  for (const fn of troubleListeners) {
    try { fn(on); } catch { /* a listener's failure is its own */ }
  }
}

/** Whether an error means the service is away for a moment. */
export function isTransient(err) {
  return err instanceof ApiError && TRANSIENT.has(err.code);
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Send a request. `body` is sent as JSON; `token` adds the bearer header; `raw: true`
 * returns the Response (for downloads). Resolves to parsed JSON, or null for 204. A read
 * (GET, HEAD) that meets a service away for a moment is tried again by itself (about 20 s
 * in all); a change is not (`retries: 0` turns retrying off for a read too).
 */
export async function request(path, opts = {}) {
  const method = (opts.method || 'GET').toUpperCase();
  const reads = method === 'GET' || method === 'HEAD';
  const retries = opts.retries ?? (reads ? RETRY_DELAYS.length : 0);
  for (let attempt = 0; ; attempt += 1) {
    try {
      const out = await requestOnce(path, opts);
      setTrouble(false);
      return out;
    } catch (err) {
      if (!isTransient(err)) {
        if (err instanceof ApiError && err.status > 0 && err.status < 500) setTrouble(false);
        throw err;
      }
      setTrouble(true);
      if (attempt >= retries || (opts.signal && opts.signal.aborted)) throw err;
      const asked = Number(err.retryAfter) * 1000;
      await sleep(Math.max(RETRY_DELAYS[Math.min(attempt, RETRY_DELAYS.length - 1)], Number.isFinite(asked) ? Math.min(asked, 8000) : 0));
    }
  }
}

async function requestOnce(path, { method = 'GET', body, token, raw = false, signal, query } = {}) {
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
      detail: t('error.offline'),
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
