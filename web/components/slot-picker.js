// Free times of a therapist, a week at a time, grouped by day in the viewer's own time zone
// (the API gives UTC instants; we say which zone we show). Each time is a
// button.slot[data-start] carrying the API's instant unchanged.

import { h, replace, notice, announce } from '../lib/dom.js';
import { publicApi, describeError } from '../lib/api.js';
import { userTimeZone, timeZoneLabel, fmtTime, fmtDay, dayKey } from '../lib/format.js';
import { t } from '../lib/i18n.js';

const WEEK_MS = 7 * 86_400_000;

export function slotPicker({ therapistId, kind = 'session', onChange = () => {}, therapistZone = null, label = t('slots.choose') }) {
  const tz = userTimeZone();
  let from = Date.now();
  let selected = null;
  let seq = 0;
  let currentKind = kind;

  const body = h('div', { class: 'slot-days', 'aria-busy': 'true' });
  const range = h('span', { class: 'slot-range', 'data-intl': '' });
  const earlier = h('button', { type: 'button', class: 'button small', disabled: true }, t('slots.earlier'));
  const later = h('button', { type: 'button', class: 'button small' }, t('slots.later'));
  const tzNote = h('p', { class: 'tz-note' },
    t('slots.your_zone', { zone: timeZoneLabel(tz) }),
    therapistZone && therapistZone !== tz ? ` ${t('slots.their_zone', { zone: timeZoneLabel(therapistZone) })}` : '');
  const el = h('div', { class: 'slot-picker', role: 'group', 'aria-label': label },
    tzNote,
    h('div', { class: 'slot-nav' }, range, h('span', { class: 'slot-nav-buttons' }, earlier, later)),
    body);

  earlier.addEventListener('click', () => {
    from = Math.max(Date.now(), from - WEEK_MS);
    load();
  });
  later.addEventListener('click', () => {
    from += WEEK_MS;
    load();
  });

  function select(iso, button) {
    selected = iso;
    for (const b of body.querySelectorAll('button.slot')) b.setAttribute('aria-pressed', b === button ? 'true' : 'false');
    onChange(iso);
  }

  async function load({ message = null } = {}) {
    const mine = ++seq;
    const to = from + WEEK_MS;
    earlier.disabled = from <= Date.now() + 60_000;
    range.textContent = `${fmtDay(new Date(from).toISOString(), tz)} – ${fmtDay(new Date(to - 1).toISOString(), tz)}`;
    body.setAttribute('aria-busy', 'true');
    replace(body, h('p', { class: 'loading' }, t('slots.looking')));
    let data;
    try {
      data = await publicApi(`/therapists/${therapistId}/slots`, {
        query: { from: new Date(from).toISOString(), to: new Date(to).toISOString(), kind: currentKind },
      });
    } catch (err) {
      if (mine !== seq) return;
      body.setAttribute('aria-busy', 'false');
      replace(body, notice('error', describeError(err)));
      return;
    }
    if (mine !== seq) return;
    body.setAttribute('aria-busy', 'false');
    const stillThere = selected && data.slots.includes(selected);
    if (!stillThere && selected) {
      selected = null;
      onChange(null);
    }
    const groups = new Map();
    for (const iso of data.slots) {
      const key = dayKey(iso, tz);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(iso);
    }
    const parts = [];
    if (message) parts.push(message);
    if (!groups.size) {
      parts.push(notice('info', t('slots.none')));
    }
    for (const [key, list] of groups) {
      const headingId = `day-${key}`;
      parts.push(h('section', { class: 'slot-day', 'aria-labelledby': headingId },
        h('h3', { id: headingId, 'data-intl': '' }, fmtDay(list[0], tz)),
        h('ul', { class: 'slot-grid' }, list.map((iso) => {
          const b = h('button', {
            type: 'button',
            class: 'slot',
            dataset: { start: iso },
            'aria-pressed': iso === selected ? 'true' : 'false',
            'aria-label': `${fmtTime(iso, tz)}, ${fmtDay(iso, tz)}`,
            'data-intl': '',
          }, fmtTime(iso, tz));
          b.addEventListener('click', () => select(iso, b));
          return h('li', {}, b);
        }))));
    }
    replace(body, ...parts);
    // The list itself is not a live region (it would be read out in full); say how many.
    announce(data.slots.length ? t('slots.found', { count: data.slots.length, range: range.textContent }) : t('slots.none_said'));
    if (typeof data.minutes === 'number') el.dataset.minutes = String(data.minutes);
  }

  return {
    el,
    load,
    reload: (opts) => load(opts),
    selected: () => selected,
    minutes: () => Number(el.dataset.minutes) || null,
    setKind(k) {
      currentKind = k;
      selected = null;
      onChange(null);
      load();
    },
  };
}
