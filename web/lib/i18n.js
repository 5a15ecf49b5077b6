// Languages (order 12): every text of the client comes from a message catalog
// (web/locales/<code>.js), looked up with t('key', {vars}).
//
// - The language is the person's choice (the picker in the header, on every page), kept in
//   this browser and, once signed in, with the account (PATCH /api/v1/me/settings
//   {language}); else the browser's preference; else English.
// - <html lang> and dir follow it; dates, times, numbers and durations are formatted with
//   Intl in that locale (lib/format.js asks locale()).
// - A value is a string with {placeholders}, or plural forms {one, other, …} chosen with
//   Intl.PluralRules by {count}.

import en from '../locales/en.js';
import de from '../locales/de.js';
import es from '../locales/es.js';

export const CATALOGS = { en, de, es };

/** The languages offered, each named in itself. */
export const LANGUAGES = [
  { code: 'en', name: 'English' },
  { code: 'de', name: 'Deutsch' },
  { code: 'es', name: 'Español' },
];

/** Scripts written right to left: the layout uses logical CSS properties, so only dir changes. */
const RTL = new Set(['ar', 'fa', 'he', 'ur']);
const STORE_KEY = 'alcove.language';

const listeners = new Set();
let current = 'en';

/** The best supported language for a list of BCP 47 tags (the browser's preference). */
export function pick(tags) {
  for (const tag of tags || []) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (CATALOGS[base]) return base;
  }
  return 'en';
}

function stored() {
  try {
    return globalThis.localStorage ? globalThis.localStorage.getItem(STORE_KEY) : null;
  } catch {
    return null;
  }
}

/** The language at start: chosen before in this browser, else the browser's preference. */
export function initialLanguage() {
  const chosen = stored();
  if (chosen && CATALOGS[chosen]) return chosen;
  const nav = globalThis.navigator;
  return pick(nav ? (nav.languages && nav.languages.length ? nav.languages : [nav.language]) : []);
}

export function language() {
  return current;
}

/** The locale for Intl formatting: the language chosen, in the browser's regional variant
 * when the browser prefers the same language. */
export function locale() {
  const nav = globalThis.navigator;
  const tag = nav && nav.language ? nav.language : '';
  return tag.toLowerCase().split('-')[0] === current ? tag : current;
}

/** Switch language: the document says so, this browser keeps it, listeners redraw. */
export function setLanguage(code, { keep = true } = {}) {
  if (!CATALOGS[code]) return;
  const changed = code !== current;
  current = code;
  const doc = globalThis.document;
  if (doc && doc.documentElement) {
    doc.documentElement.lang = code;
    doc.documentElement.dir = RTL.has(code) ? 'rtl' : 'ltr';
  }
  if (keep) {
    try {
      if (globalThis.localStorage) globalThis.localStorage.setItem(STORE_KEY, code);
    } catch { /* private mode: the choice lasts this page */ }
  }
  if (changed) listeners.forEach((fn) => fn(code));
}

export function onLanguageChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The text of `key` in the current language, with {placeholders} filled from `vars`. */
export function t(key, vars = {}) {
  let v = CATALOGS[current][key];
  if (v === undefined) v = en[key];
  if (v === undefined) {
    // A missing key is a bug the catalog test catches; show the key rather than nothing.
    console.error(`i18n: no text for ${key}`);
    return key;
  }
  if (typeof v === 'object') {
    const n = Number(vars.count ?? 0);
    v = v[new Intl.PluralRules(current).select(n)] ?? v.other;
  }
  return v.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** Whether `key` exists (for texts chosen by a code from the server). */
export function has(key) {
  return en[key] !== undefined;
}

setLanguage(initialLanguage(), { keep: false });
