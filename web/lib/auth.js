// Sign-in state. Tokens live in sessionStorage (gone when the tab closes; never in
// localStorage). The access token is refreshed shortly before it expires. Refresh tokens are
// single-use and rotate, and presenting a spent one revokes the whole sign-in, so there is
// never more than one refresh in flight: every caller shares the same promise.

import { t } from './i18n.js';
import { request, ApiError } from './http.js';

const KEY = 'alcove.auth';
// Refresh this long before the access token expires (or at 80 % of its life if shorter).
const REFRESH_MARGIN_MS = 60_000;

let state = load();
let refreshing = null;
let timer = null;
const listeners = new Set();

function load() {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function save(next) {
  state = next;
  if (next) sessionStorage.setItem(KEY, JSON.stringify(next));
  else sessionStorage.removeItem(KEY);
  schedule();
  for (const fn of listeners) {
    try { fn(state ? state.user : null); } catch (e) { console.error(e); }
  }
}

function fromTokenResponse(t) {
  return {
    access_token: t.access_token,
    refresh_token: t.refresh_token,
    // Absolute expiry, so that a reload knows how long is left.
    expires_at: Date.now() + t.expires_in * 1000,
    lifetime_ms: t.expires_in * 1000,
    user: t.user,
  };
}

// The server ends a sign-in that goes unused for the idle limit (idle_sign_out_seconds):
// while this tab is open the sign-in is in use, so it refreshes at least twice per limit
// (during a call too, when nothing else may reach the API for an hour).
let idleLimitMs = 900_000;

/** Tell the token keeper the deployment's idle limit (from the client config). */
export function setIdleLimit(seconds) {
  if (seconds > 0) {
    idleLimitMs = seconds * 1000;
    schedule();
  }
}

function refreshDelay() {
  if (!state) return null;
  const margin = Math.min(REFRESH_MARGIN_MS, (state.lifetime_ms || 900_000) * 0.2);
  const beforeExpiry = state.expires_at - margin - Date.now();
  const issued = state.expires_at - (state.lifetime_ms || 900_000);
  const beforeIdle = issued + idleLimitMs / 2 - Date.now();
  return Math.max(0, Math.min(beforeExpiry, beforeIdle));
}

function schedule() {
  clearTimeout(timer);
  timer = null;
  const delay = refreshDelay();
  if (delay === null) return;
  timer = setTimeout(() => {
    refresh().catch(() => { /* handled in refresh: signs out on a refused token */ });
  }, delay);
}

export function currentUser() {
  return state ? state.user : null;
}

export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Why the last sign-out happened (shown on the sign-in page), read once. */
let signOutReason = null;
export function takeSignOutReason() {
  const r = signOutReason;
  signOutReason = null;
  return r;
}

export async function login(email, password) {
  const t = await request('/auth/login', { method: 'POST', body: { email, password } });
  save(fromTokenResponse(t));
  return t.user;
}

export async function register(displayName, email, password) {
  return request('/auth/register', {
    method: 'POST',
    body: { email, password, display_name: displayName },
  });
}

// A tab opened from another one (Ctrl+click, "open in new tab") starts with a copy of its
// sessionStorage, so two tabs can hold the same refresh token. If both used it, the server
// would take the second use for theft and end the sign-in. So refreshes are serialised
// across tabs with a Web Lock, and a tab that rotates the tokens tells the others (over a
// BroadcastChannel) which token it spent and what replaced it; a tab holding that same
// token adopts the new pair instead of spending the old one.
const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('alcove-auth') : null;
if (channel) {
  channel.onmessage = (ev) => {
    const msg = ev.data || {};
    if (msg.type === 'rotated' && state && msg.spent === state.refresh_token) save(msg.next);
    else if (msg.type === 'signed-out' && state && msg.token === state.refresh_token) {
      signOutReason = t('auth.signed_out_elsewhere');
      save(null);
    }
  };
}

function withRefreshLock(fn) {
  if (navigator.locks && navigator.locks.request) return navigator.locks.request('alcove-refresh', fn);
  return fn();
}

/**
 * Rotate the tokens. Concurrent callers share one request: sending the same refresh token
 * twice would look like theft to the server and end the sign-in.
 */
export function refresh() {
  if (refreshing) return refreshing;
  if (!state) return Promise.reject(new ApiError({ status: 401, code: 'unauthenticated', detail: t('error.not_signed_in') }));
  const before = state.refresh_token;
  refreshing = (async () => {
    try {
      return await withRefreshLock(async () => {
        // Another tab may have rotated our shared token while we waited for the lock.
        if (!state) throw new ApiError({ status: 401, code: 'unauthenticated', detail: t('error.not_signed_in') });
        if (state.refresh_token !== before && state.expires_at - Date.now() > 30_000) return state.access_token;
        const token = state.refresh_token;
        const t = await request('/auth/refresh', { method: 'POST', body: { refresh_token: token } });
        const next = fromTokenResponse(t);
        save(next);
        if (channel) channel.postMessage({ type: 'rotated', spent: token, next });
        return next.access_token;
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        signOutReason = err.code === 'sign_in_idle'
          ? t('auth.signed_out_idle')
          : t('auth.ended');
        save(null);
      } else {
        // A network hiccup: try again a little later, keep the tokens.
        clearTimeout(timer);
        timer = setTimeout(() => refresh().catch(() => {}), 15_000);
      }
      throw err;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** A valid access token, refreshing first if it is about to expire. */
export async function accessToken() {
  if (!state) throw new ApiError({ status: 401, code: 'unauthenticated', detail: t('error.not_signed_in') });
  if (refreshing) return refreshing;
  if (state.expires_at - Date.now() < 15_000) return refresh();
  return state.access_token;
}

/** Sign out: revoke the sign-in on the server (best effort) and forget the tokens. */
export async function logout(reason = null) {
  const token = state && state.refresh_token;
  signOutReason = reason;
  save(null);
  if (channel && token) channel.postMessage({ type: 'signed-out', token });
  if (token) {
    try {
      await request('/auth/logout', { method: 'POST', body: { refresh_token: token } });
    } catch {
      // Already ended, or offline: the tokens are gone from this tab either way.
    }
  }
}

/** Update the stored user (after a profile change). */
export function updateUser(patch) {
  if (!state) return;
  save({ ...state, user: { ...state.user, ...patch } });
}

// Pick up where a reload left off.
schedule();
