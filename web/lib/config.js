// What this deployment tells the web client (GET /api/v1/client-config), fetched once.

import { request } from './http.js';

const DEFAULTS = {
  idle_sign_out_seconds: 900,
  join_opens_before_seconds: 600,
  join_closes_after_seconds: 1800,
  late_cancel_window_seconds: 86400,
  registration_open: true,
  relay_available: false,
  relay_enforced: false,
};

let config = null;
let loading = null;

export function loadConfig() {
  if (config) return Promise.resolve(config);
  if (!loading) {
    loading = request('/client-config')
      .then((c) => { config = { ...DEFAULTS, ...c }; return config; })
      .catch(() => { loading = null; return { ...DEFAULTS }; });
  }
  return loading;
}

/** The loaded config (defaults before it arrives). */
export function getConfig() {
  return config || DEFAULTS;
}
