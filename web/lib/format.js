// Dates and times, always shown in the viewer's own time zone (the API speaks UTC), in the
// language of the page.

import { locale } from './i18n.js';

export function userTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

// The language chosen (lib/i18n.js), in the browser's regional variant when it is the same
// language (en-GB dates for a British browser reading English).

/** "Europe/Paris (CET)" — the zone name people can check against their clock. */
export function timeZoneLabel(tz = userTimeZone(), at = new Date()) {
  let short = '';
  try {
    const parts = new Intl.DateTimeFormat(locale(), { timeZone: tz, timeZoneName: 'short' }).formatToParts(at);
    short = (parts.find((p) => p.type === 'timeZoneName') || {}).value || '';
  } catch { /* ignore */ }
  const name = tz.replace(/_/g, ' ');
  return short && short !== tz ? `${name} (${short})` : name;
}

export function fmtTime(iso, tz) {
  return new Date(iso).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', timeZone: tz });
}

export function fmtDay(iso, tz) {
  return new Date(iso).toLocaleDateString(locale(), { weekday: 'long', day: 'numeric', month: 'long', timeZone: tz });
}

export function fmtDateTime(iso, tz) {
  return `${fmtDay(iso, tz)}, ${fmtTime(iso, tz)}`;
}

export function fmtRange(startIso, endIso, tz) {
  return `${fmtDay(startIso, tz)}, ${fmtTime(startIso, tz)}–${fmtTime(endIso, tz)}`;
}

/** YYYY-MM-DD of an instant in a time zone (for grouping by day). */
export function dayKey(iso, tz = userTimeZone()) {
  const d = new Date(iso);
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(d);
  const get = (t) => (parts.find((p) => p.type === t) || {}).value;
  return `${get('year')}-${get('month')}-${get('day')}`;
}

/** "in 5 minutes", "2 hours ago" */
export function relative(iso, now = Date.now()) {
  const diff = new Date(iso).getTime() - now;
  const abs = Math.abs(diff);
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' });
  if (abs < 60_000) return rtf.format(Math.round(diff / 1000), 'second');
  if (abs < 3_600_000) return rtf.format(Math.round(diff / 60_000), 'minute');
  if (abs < 86_400_000) return rtf.format(Math.round(diff / 3_600_000), 'hour');
  return rtf.format(Math.round(diff / 86_400_000), 'day');
}

/** "1 hr, 5 min", "12 min, 30 sec", "45 sec" (in the page's language). */
export function fmtDuration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const hrs = Math.floor(total / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  const unit = (n, u) => new Intl.NumberFormat(locale(), { style: 'unit', unit: u, unitDisplay: 'short' }).format(n);
  const parts = hrs > 0 ? [unit(hrs, 'hour'), unit(min, 'minute')]
    : min > 0 ? [unit(min, 'minute'), unit(sec, 'second')]
      : [unit(sec, 'second')];
  return new Intl.ListFormat(locale(), { style: 'narrow', type: 'unit' }).format(parts);
}

/** "12:05" or "1:02:05" clock for a running call. */
export function fmtClock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hrs = Math.floor(total / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  const mm = String(min).padStart(hrs ? 2 : 1, '0');
  return `${hrs ? `${hrs}:` : ''}${mm}:${String(sec).padStart(2, '0')}`;
}

export function languageName(tag) {
  try {
    const dn = new Intl.DisplayNames(locale(), { type: 'language' });
    return dn.of(tag) || tag;
  } catch {
    return tag;
  }
}

export function pluralise(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** A lead time in whole units, in the page's language: "24 hours", "1 hour", "90 minutes". */
export function leadText(seconds) {
  const unit = (n, u) => new Intl.NumberFormat(locale(), { style: 'unit', unit: u, unitDisplay: 'long' }).format(n);
  if (seconds === 86_400) return unit(24, 'hour');
  const units = [[86_400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
  for (const [size, name] of units) {
    if (seconds >= size && seconds % size === 0) return unit(seconds / size, name);
  }
  return unit(seconds, 'second');
}
