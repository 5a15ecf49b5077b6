// The therapist's dashboard: today's sessions, the waiting room (admit / deny / notice),
// weekly hours, and the public profile.
//
// For every session of today that is inside its join window, the dashboard opens the room
// (as the therapist) so it can see who is waiting. The connection lives in the session
// registry (call/session.js), not in this page: admitting someone moves to the call route and
// the call uses the same connection.

import { t } from '../lib/i18n.js';
import { h, replace, field, select, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError } from '../lib/api.js';
import { updateUser } from '../lib/auth.js';
import { fmtTime, userTimeZone, timeZoneLabel, dayKey } from '../lib/format.js';
import { loadVocabulary, labelFor } from '../lib/vocab.js';
import {
  ensureSession, getSession, allSessions, onSessionsChange, leftRooms, unmarkRoomLeft,
} from '../call/session.js';
import { fetchAll, otherSide, kindLabel, inJoinWindow } from './appointments.js';
import { networkBadge } from '../call/nettest.js';

const WEEKDAYS = [
  { value: 'mon', key: 'dash.mon' }, { value: 'tue', key: 'dash.tue' }, { value: 'wed', key: 'dash.wed' },
  { value: 'thu', key: 'dash.thu' }, { value: 'fri', key: 'dash.fri' }, { value: 'sat', key: 'dash.sat' },
  { value: 'sun', key: 'dash.sun' },
];

function timeOptions(extra = [], { withMidnightEnd = false, empty } = {}) {
  const set = new Set();
  for (let m = 0; m < 24 * 60; m += 15) set.add(`${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`);
  if (withMidnightEnd) set.add('24:00');
  extra.filter(Boolean).forEach((v) => set.add(v));
  const opts = [...set].sort().map((v) => ({ value: v, label: v }));
  return empty ? [{ value: '', label: empty }, ...opts] : opts;
}

function timeZones(current) {
  let zones = [];
  try { zones = Intl.supportedValuesOf('timeZone'); } catch { zones = []; }
  const set = new Set([...zones, 'UTC', current, userTimeZone()].filter(Boolean));
  return [...set].sort().map((z) => ({ value: z, label: z.replace(/_/g, ' ') }));
}

export async function render(ctx) {
  const { root, user } = ctx;
  const tz = userTimeZone();
  const cleanups = [];

  const todayBox = h('div', {}, h('p', { class: 'loading' }, t('dash.loading_today')));
  const lobbyBox = h('div', {});
  const lobbyStatus = h('p', { class: 'muted', id: 'lobby-status', role: 'status' });
  const noticeStatus = h('div', { 'aria-live': 'polite' });
  const noticeText = h('input', { type: 'text', id: 'notice-text', maxlength: 280, placeholder: t('dash.note_placeholder') });
  const noticeSend = h('button', { type: 'submit', class: 'button', id: 'notice-send' }, t('dash.note_send'));
  const noticeForm = h('form', { class: 'notice-form' },
    h('div', { class: 'field' }, h('label', { for: 'notice-text' }, t('dash.note_label')), noticeText),
    noticeStatus, h('div', { class: 'actions' }, noticeSend));

  const page = h('section', { class: 'page' },
    h('h1', {}, t(`dash.hello_${greeting()}`, { name: user.display_name })),
    h('p', { class: 'muted' }, t('dash.your_zone', { zone: timeZoneLabel(tz) })),
    h('div', { class: 'dashboard-grid' },
      h('section', { class: 'card', id: 'lobby', 'aria-labelledby': 'lobby-title' },
        h('h2', { id: 'lobby-title' }, t('dash.waiting_room')),
        lobbyStatus, lobbyBox,
        noticeForm),
      h('section', { class: 'card', id: 'today-sessions', 'aria-labelledby': 'today-title' },
        h('h2', { id: 'today-title' }, t('dash.today')),
        todayBox,
        h('p', { class: 'small' }, h('a', { href: '#/appointments' }, t('dash.all'))))),
    h('section', { class: 'card section-gap', 'aria-labelledby': 'hours-title' }, h('h2', { id: 'hours-title' }, t('dash.hours')), h('div', { id: 'availability-box' }, h('p', { class: 'loading' }, t('dash.loading')))),
    h('section', { class: 'card section-gap', 'aria-labelledby': 'profile-title' }, h('h2', { id: 'profile-title' }, t('dash.profile')), h('div', { id: 'profile-box' }, h('p', { class: 'loading' }, t('dash.loading')))));
  root.append(page);

  // ---- today + rooms ----
  let today = [];
  const loadToday = async () => {
    const now = new Date();
    const from = new Date(now);
    from.setHours(0, 0, 0, 0);
    const to = new Date(from.getTime() + 86_400_000);
    try {
      const items = await fetchAll({ from: from.toISOString(), to: to.toISOString() }, 2);
      today = items.filter((a) => dayKey(a.starts_at, tz) === dayKey(now.toISOString(), tz))
        .sort((a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at));
      if (!ctx.alive()) return;
      drawToday();
      openRooms();
    } catch (err) {
      if (ctx.alive()) replace(todayBox, notice('error', describeError(err)));
    }
  };

  let todaySig = '';
  const drawToday = (force = false) => {
    const now = Date.now();
    const shown = today.filter((a) => a.status !== 'cancelled');
    const cancelled = today.length - shown.length;
    // Redraw only when something visible changed, so keyboard focus is not lost.
    const sig = JSON.stringify([shown.map((a) => [a.id, a.status, a.auto_admit, inJoinWindow(a, now), !!(getSession(a.id) && getSession(a.id).live), a.clients.filter((c) => c.turned_away).map((c) => c.id)]), cancelled]);
    if (!force && sig === todaySig) return;
    todaySig = sig;
    const note = cancelled ? h('p', { class: 'small muted' }, t('dash.cancelled_today', { count: cancelled })) : null;
    if (!shown.length) {
      replace(todayBox, h('p', { class: 'muted' }, t('dash.no_sessions')), note);
      return;
    }
    replace(todayBox, h('ul', { class: 'session-list' }, shown.map((a) => {
      const open = inJoinWindow(a, now);
      const join = h('button', { type: 'button', class: `button small join-button ${open ? 'primary' : ''}`, disabled: !open }, open ? t('dash.join') : t('dash.opens', { time: fmtTime(a.join_opens_at, tz) }));
      join.addEventListener('click', () => ctx.navigate(`/precall/${a.id}`));
      const auto = h('input', { type: 'checkbox', id: `auto-${a.id}`, checked: a.auto_admit });
      auto.addEventListener('change', async () => {
        try {
          const res = await api(`/appointments/${a.id}/auto-admit`, { method: 'PUT', body: { auto_admit: auto.checked } });
          a.auto_admit = res.auto_admit;
          announce(res.auto_admit ? t('dash.auto_on') : t('dash.auto_off'));
        } catch (err) {
          auto.checked = !auto.checked;
          announce(describeError(err));
        }
      });
      const live = getSession(a.id);
      // Someone turned away cannot knock again until the therapist lets them.
      const turnedAway = a.status === 'booked' ? a.clients.filter((c) => c.turned_away).map((c) => {
        const again = h('button', { type: 'button', class: 'button small let-knock-button', dataset: { client: c.id } }, t('dash.knock_again'));
        again.addEventListener('click', async () => {
          try {
            await api(`/appointments/${a.id}/denials/${c.id}`, { method: 'DELETE' });
            c.turned_away = false;
            announce(t('dash.can_knock', { name: c.display_name }));
            drawToday(true);
          } catch (err) {
            announce(describeError(err));
          }
        });
        return h('p', { class: 'small turned-away' }, t('dash.turned_away', { name: c.display_name }), ' ', again);
      }) : [];
      return h('li', { class: 'session-item', dataset: { id: a.id, status: a.status } },
        h('div', {},
          h('span', { class: 'time' }, `${fmtTime(a.starts_at, tz)}–${fmtTime(a.ends_at, tz)}`), ' ',
          h('span', {}, t('appt.with', { kind: kindLabel(a), name: otherSide(a, user) })), ' ',
          a.status !== 'booked' ? h('span', { class: 'badge off' }, a.status === 'no_show' ? t('dash.missed') : a.status === 'completed' ? t('dash.status_completed') : t('dash.status_cancelled')) : null,
          live && live.live ? h('span', { class: 'badge' }, t('dash.room_open')) : null),
        a.status === 'booked' && now < Date.parse(a.join_closes_at)
          ? h('div', { class: 'actions' },
            h('div', { class: 'check' }, auto, h('label', { for: `auto-${a.id}` }, t('dash.auto_admit'))),
            join)
          : null,
        turnedAway);
    })), note);
  };

  // Open the room of every session of today that is inside its join window.
  const openRooms = () => {
    const now = Date.now();
    const left = leftRooms();
    for (const a of today) {
      if (!inJoinWindow(a, now) || left.has(a.id)) continue;
      const s = ensureSession(a.id);
      s.appointment = a;
      if (s.phase === 'idle') s.connect();
    }
    drawLobby();
  };

  let lobbySig = '';
  const drawLobby = () => {
    const live = allSessions().filter((s) => s.live || s.phase === 'failed');
    const waitingCount = live.reduce((n, s) => n + s.lobby.length, 0);
    const connected = live.filter((s) => s.phase === 'in-call');
    const reconnecting = live.filter((s) => s.phase === 'reconnecting' || s.phase === 'connecting');
    let status;
    if (waitingCount) {
      status = t('dash.waiting_count', { count: waitingCount });
    } else if (connected.length) {
      status = t('dash.none_waiting');
    } else if (reconnecting.length) {
      status = t('dash.connecting');
    } else {
      const next = today.find((a) => a.status === 'booked' && Date.parse(a.join_opens_at) > Date.now());
      status = next
        ? t('dash.next_opens', { start: fmtTime(next.starts_at, tz), opens: fmtTime(next.join_opens_at, tz) })
        : t('dash.none_open');
    }
    if (lobbyStatus.textContent !== status) lobbyStatus.textContent = status;

    const reopen = today.filter((a) => inJoinWindow(a) && leftRooms().has(a.id) && !getSession(a.id));
    // Rebuild the list only when it changed, so focus stays on the button someone is on.
    const sig = JSON.stringify([live.map((s) => [s.appointmentId, s.lobby.map((w) => w.participant_id)]), reopen.map((a) => a.id)]);
    if (sig === lobbySig) return;
    lobbySig = sig;
    const entries = [];
    for (const s of live) {
      const a = s.appointment || today.find((x) => x.id === s.appointmentId);
      for (const w of s.lobby) {
        const name = w.display_name;
        const admit = h('button', { type: 'button', class: 'button primary small admit-button', dataset: { participant: w.participant_id }, 'aria-label': t('dash.admit_label', { name }) }, t('dash.admit'));
        const deny = h('button', { type: 'button', class: 'button small deny-button', dataset: { participant: w.participant_id }, 'aria-label': t('dash.turn_away_label', { name }) }, t('dash.turn_away'));
        admit.addEventListener('click', () => {
          if (s.admit(w.participant_id)) {
            announce(t('dash.admitted', { name }));
            unmarkRoomLeft(s.appointmentId);
            ctx.navigate(`/call/${s.appointmentId}`);
          } else {
            announce(t('dash.not_connected'));
          }
        });
        deny.addEventListener('click', () => {
          if (s.denyClient(w.participant_id)) {
            announce(t('dash.denied', { name }));
            // The denial is kept with the appointment: show it (and its undo) under Today.
            setTimeout(() => { if (ctx.alive()) loadToday(); }, 700);
          }
        });
        entries.push(h('li', { class: 'lobby-entry', dataset: { participant: w.participant_id, appointment: s.appointmentId } },
          h('div', {},
            h('span', { class: 'who' }, name),
            h('span', { class: 'small muted' }, ' ', a ? t('dash.waiting_since_for', { time: fmtTime(new Date(w.since).toISOString(), tz), start: fmtTime(a.starts_at, tz), kind: kindLabel(a).toLowerCase() }) : t('dash.waiting_since', { time: fmtTime(new Date(w.since).toISOString(), tz) })),
            networkBadge(h, w.network)),
          h('div', { class: 'actions' }, admit, deny)));
      }
    }
    replace(lobbyBox,
      entries.length ? h('ul', { class: 'lobby-list' }, entries) : null,
      reopen.map((a) => h('button', {
        type: 'button',
        class: 'button small',
        onclick: () => { unmarkRoomLeft(a.id); openRooms(); },
      }, t('dash.reopen', { time: fmtTime(a.starts_at, tz) }))));
  };

  noticeForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = noticeText.value.trim();
    if (!text) {
      noticeStatus.replaceChildren(notice('warning', t('dash.note_empty')));
      noticeText.focus();
      return;
    }
    const rooms = allSessions().filter((s) => s.phase === 'in-call' && s.role === 'therapist');
    const waiting = rooms.reduce((n, s) => n + s.lobby.length, 0);
    if (!rooms.length || !waiting) {
      noticeStatus.replaceChildren(notice('info', t('dash.note_nobody')));
      return;
    }
    rooms.filter((s) => s.lobby.length).forEach((s) => s.sendNotice(text));
    noticeStatus.replaceChildren(notice('success', t('dash.note_sent', { count: waiting })));
    noticeText.value = '';
  });

  cleanups.push(onSessionsChange(({ type }) => {
    if (!ctx.alive()) return;
    if (['lobby', 'phase', 'closed', 'created'].includes(type)) drawLobby();
    if (type === 'phase' || type === 'closed') drawToday();
  }));
  const serverErrors = (ev) => {
    if (ev.detail && ev.detail.type === 'server-error' && ev.detail.code === 'invalid_notice') {
      noticeStatus.replaceChildren(notice('error', t('dash.note_bad')));
    }
  };
  const watched = new Set();
  const watch = () => {
    for (const s of allSessions()) {
      if (!watched.has(s)) {
        watched.add(s);
        s.addEventListener('change', serverErrors);
      }
    }
  };
  cleanups.push(onSessionsChange(watch));
  cleanups.push(() => watched.forEach((s) => s.removeEventListener('change', serverErrors)));

  await loadToday();
  watch();
  // Keep today's list fresh (a session booked a minute ago must show up, and its waiting
  // room open, without a reload): a small request every 10 s while the page is shown.
  const tick = setInterval(() => { if (ctx.alive() && !document.hidden) loadToday(); }, 10_000);
  const onVisible = () => { if (!document.hidden && ctx.alive()) loadToday(); };
  document.addEventListener('visibilitychange', onVisible);
  cleanups.push(() => { clearInterval(tick); document.removeEventListener('visibilitychange', onVisible); });

  // ---- availability and profile (independent of the rooms) ----
  availabilityEditor(page.querySelector('#availability-box'));
  profileEditor(page.querySelector('#profile-box'), user);

  return () => cleanups.forEach((fn) => fn());
}

function greeting() {
  const hr = new Date().getHours();
  if (hr < 12) return 'morning';
  if (hr < 18) return 'afternoon';
  return 'evening';
}

// ---- availability editor ------------------------------------------------------------------

async function availabilityEditor(box) {
  let data;
  try {
    data = await api('/therapists/me/availability');
  } catch (err) {
    replace(box, notice('error', describeError(err)));
    return;
  }
  const status = h('div', { 'aria-live': 'polite' });
  const weeklyRows = h('div', { id: 'weekly-rows' });
  const exceptionRows = h('div', { id: 'exception-rows' });
  const rowControls = { weekly: [], exceptions: [] };

  const tzSel = field(t('dash.hours_zone'), select(timeZones(data.time_zone), { id: 'availability-tz', value: data.time_zone }),
    { hint: t('dash.hours_zone_hint') });
  tzSel.control.setAttribute('translate', 'no'); // IANA names

  const addWeekly = (rule = { weekday: 'mon', start: '09:00', end: '17:00' }) => {
    const controls = {
      weekday: select(WEEKDAYS.map((d) => ({ value: d.value, label: t(d.key) })), { value: rule.weekday }),
      start: select(timeOptions([rule.start]), { value: rule.start }),
      end: select(timeOptions([rule.end], { withMidnightEnd: true }), { value: rule.end }),
    };
    const i = rowControls.weekly.length;
    const fDay = field(t('dash.day'), controls.weekday, { id: `weekly-${i}-weekday` });
    const fStart = field(t('dash.from'), controls.start, { id: `weekly-${i}-start` });
    const fEnd = field(t('dash.until'), controls.end, { id: `weekly-${i}-end` });
    const remove = h('button', { type: 'button', class: 'button small quiet', 'aria-label': t('dash.remove_hours') }, t('dash.remove'));
    const row = h('div', { class: 'rule-row' }, fDay.wrap, fStart.wrap, fEnd.wrap, remove);
    const entry = { row, controls, fields: { weekday: fDay, start: fStart, end: fEnd }, removed: false };
    remove.addEventListener('click', () => {
      entry.removed = true;
      row.remove();
      announce(t('dash.hours_removed'));
    });
    rowControls.weekly.push(entry);
    weeklyRows.append(row);
    return entry;
  };

  const addException = (ex = { date: '', kind: 'unavailable', start: null, end: null }) => {
    const controls = {
      date: h('input', { type: 'date', value: ex.date || '' }),
      kind: select([{ value: 'unavailable', label: t('dash.time_off') }, { value: 'available', label: t('dash.extra') }], { value: ex.kind }),
      start: select(timeOptions([ex.start], { empty: t('dash.whole_day') }), { value: ex.start || '' }),
      end: select(timeOptions([ex.end], { withMidnightEnd: true, empty: '—' }), { value: ex.end || '' }),
    };
    const i = rowControls.exceptions.length;
    const fDate = field(t('dash.date'), controls.date, { id: `exception-${i}-date` });
    const fKind = field(t('dash.what'), controls.kind, { id: `exception-${i}-kind` });
    const fStart = field(t('dash.from'), controls.start, { id: `exception-${i}-start` });
    const fEnd = field(t('dash.until'), controls.end, { id: `exception-${i}-end` });
    const remove = h('button', { type: 'button', class: 'button small quiet', 'aria-label': t('dash.remove_change') }, t('dash.remove'));
    const row = h('div', { class: 'rule-row exception-row' }, fDate.wrap, fKind.wrap, fStart.wrap, fEnd.wrap, remove);
    const entry = { row, controls, fields: { date: fDate, kind: fKind, start: fStart, end: fEnd }, removed: false };
    remove.addEventListener('click', () => {
      entry.removed = true;
      row.remove();
      announce(t('dash.change_removed'));
    });
    rowControls.exceptions.push(entry);
    exceptionRows.append(row);
    return entry;
  };

  (data.weekly || []).forEach((r) => addWeekly(r));
  (data.exceptions || []).forEach((e) => addException(e));

  const num = (label, id, value, min, max, hint) => field(label, h('input', { type: 'number', id, min, max, step: 1, value: String(value ?? '') , inputmode: 'numeric' }), { hint });
  const sessionMin = num(t('dash.session_len'), 'availability-session', data.session_minutes, 15, 240, t('dash.range', { min: 15, max: 240 }));
  const consultMin = num(t('dash.consult_len'), 'availability-consultation', data.consultation_minutes, 10, 120, t('dash.range', { min: 10, max: 120 }));
  const buffer = num(t('dash.buffer'), 'availability-buffer', data.buffer_minutes, 0, 120, t('dash.range', { min: 0, max: 120 }));
  const step = num(t('dash.step'), 'availability-step', data.slot_step_minutes, 5, 240, t('dash.range', { min: 5, max: 240 }));
  const simple = { time_zone: tzSel, session_minutes: sessionMin, consultation_minutes: consultMin, buffer_minutes: buffer, slot_step_minutes: step };

  const addWeeklyBtn = h('button', { type: 'button', class: 'button small' }, t('dash.add_hours'));
  addWeeklyBtn.addEventListener('click', () => addWeekly().controls.weekday.focus());
  const addExBtn = h('button', { type: 'button', class: 'button small' }, t('dash.add_exception'));
  addExBtn.addEventListener('click', () => addException().controls.date.focus());
  const save = h('button', { type: 'submit', class: 'button primary', id: 'availability-save' }, t('dash.save_hours'));

  const form = h('form', { id: 'availability-form', novalidate: true },
    tzSel.wrap,
    h('fieldset', {}, h('legend', {}, t('dash.every_week')), weeklyRows, addWeeklyBtn),
    h('fieldset', {}, h('legend', {}, t('dash.exceptions')), h('p', { class: 'hint' }, t('dash.exceptions_hint')), exceptionRows, addExBtn),
    h('div', { class: 'inline-fields' }, sessionMin.wrap, consultMin.wrap, buffer.wrap, step.wrap),
    status,
    h('div', { class: 'actions' }, save));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const clearErrors = () => {
      Object.values(simple).forEach((f) => f.setError(null));
      for (const list of Object.values(rowControls)) for (const e of list) Object.values(e.fields).forEach((f) => f.setError(null));
    };
    clearErrors();
    const weekly = rowControls.weekly.filter((e) => !e.removed);
    const exceptions = rowControls.exceptions.filter((e) => !e.removed);
    const body = {
      time_zone: tzSel.control.value,
      weekly: weekly.map((e) => ({ weekday: e.controls.weekday.value, start: e.controls.start.value, end: e.controls.end.value })),
      exceptions: exceptions.map((e) => {
        const out = { date: e.controls.date.value, kind: e.controls.kind.value };
        if (e.controls.start.value) out.start = e.controls.start.value;
        if (e.controls.end.value) out.end = e.controls.end.value;
        return out;
      }),
      session_minutes: Number(sessionMin.control.value),
      consultation_minutes: Number(consultMin.control.value),
      buffer_minutes: Number(buffer.control.value),
      slot_step_minutes: Number(step.control.value),
    };
    setBusy(save, true, t('dash.saving'));
    try {
      await api('/therapists/me/availability', { method: 'PUT', body });
      status.replaceChildren(notice('success', t('dash.hours_saved')));
      announce(t('dash.hours_saved_said'));
    } catch (err) {
      if (err instanceof ApiError && err.errors.length) {
        const messages = [];
        for (const { field: name, message } of err.errors) {
          messages.push(`${describeField(name)}: ${message}`);
          const m = /^(weekly|exceptions)\[(\d+)\](?:\.(\w+))?$/.exec(name);
          if (m) {
            const list = m[1] === 'weekly' ? weekly : exceptions;
            const entry = list[Number(m[2])];
            const f = entry && (entry.fields[m[3]] || entry.fields.start || Object.values(entry.fields)[0]);
            if (f) f.setError(message);
          } else if (simple[name]) {
            simple[name].setError(message);
          }
        }
        status.replaceChildren(notice('error', h('p', {}, t('dash.check_these')), h('ul', { class: 'error-list' }, messages.map((m) => h('li', {}, m)))));
        const first = form.querySelector('[aria-invalid="true"]');
        if (first) first.focus();
      } else {
        status.replaceChildren(notice('error', describeError(err)));
      }
    } finally {
      setBusy(save, false);
    }
  });

  replace(box, form);
}

function describeField(name) {
  const m = /^(weekly|exceptions)\[(\d+)\](?:\.(\w+))?$/.exec(name);
  if (m) {
    const key = `dash.row_${m[1] === 'weekly' ? 'weekly' : 'exception'}${m[3] ? '_field' : ''}`;
    return t(key, { row: Number(m[2]) + 1, field: m[3] || '' });
  }
  return name.replace(/_/g, ' ');
}

// ---- profile editor -------------------------------------------------------------------------

async function profileEditor(box, user) {
  let profile;
  let vocab;
  try {
    [profile, vocab] = await Promise.all([api('/therapists/me'), loadVocabulary()]);
  } catch (err) {
    replace(box, notice('error', describeError(err)));
    return;
  }
  const status = h('div', { 'aria-live': 'polite' });
  const name = field(t('dash.p_name'), h('input', { type: 'text', id: 'profile-name', value: profile.display_name, maxlength: 100, autocomplete: 'name' }));
  const bio = field(t('dash.p_about'), h('textarea', { id: 'profile-bio', rows: 6, maxlength: 5000 }), { hint: t('dash.p_about_hint') });
  bio.control.value = profile.bio || '';
  const quals = field(t('dash.p_quals'), h('textarea', { id: 'profile-qualifications', rows: 3 }), { hint: t('dash.p_quals_hint') });
  quals.control.value = (profile.qualifications || []).join('\n');
  const langs = field(t('dash.p_langs'), h('input', { type: 'text', id: 'profile-languages', value: (profile.languages || []).join(', ') }), { hint: t('dash.p_langs_hint') });
  const tzSel = field(t('dash.p_zone'), select(timeZones(profile.time_zone), { id: 'profile-tz', value: profile.time_zone }));
  tzSel.control.setAttribute('translate', 'no'); // IANA names
  const free = h('input', { type: 'checkbox', id: 'profile-free', checked: profile.offers_free_consultation });

  const group = (legend, list, chosen, prefix) => {
    const boxes = list.map((v) => {
      const cb = h('input', { type: 'checkbox', id: `${prefix}-${v.slug}`, value: v.slug, checked: chosen.includes(v.slug) });
      return { cb, el: h('div', { class: 'check' }, cb, h('label', { for: cb.id }, labelFor(list, v.slug))) };
    });
    const err = h('p', { class: 'field-error', hidden: true });
    const fs = h('fieldset', {}, h('legend', {}, legend), h('div', { class: 'checks' }, boxes.map((b) => b.el)), err);
    return {
      el: fs,
      values: () => boxes.filter((b) => b.cb.checked).map((b) => b.cb.value),
      setError(m) { err.textContent = m || ''; err.hidden = !m; },
    };
  };
  const specs = group(t('dash.p_specs'), vocab.specialisations, profile.specialisations || [], 'spec');
  const mods = group(t('dash.p_mods'), vocab.modalities, profile.modalities || [], 'mod');
  const save = h('button', { type: 'submit', class: 'button primary', id: 'profile-save' }, t('dash.p_save'));
  const fields = { display_name: name, bio, qualifications: quals, languages: langs, time_zone: tzSel, specialisations: specs, modalities: mods };

  const form = h('form', { id: 'profile-form', novalidate: true },
    name.wrap, bio.wrap, quals.wrap, specs.el, mods.el, langs.wrap, tzSel.wrap,
    h('div', { class: 'check' }, free, h('label', { for: 'profile-free' }, t('dash.p_free'))),
    status, h('div', { class: 'actions' }, save, h('a', { href: `#/therapists/${user.id}`, class: 'button quiet' }, t('dash.p_see'))));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    Object.values(fields).forEach((f) => f.setError(null));
    status.replaceChildren();
    const body = {
      display_name: name.control.value.trim(),
      bio: bio.control.value,
      qualifications: quals.control.value.split('\n').map((s) => s.trim()).filter(Boolean),
      specialisations: specs.values(),
      modalities: mods.values(),
      languages: langs.control.value.split(/[,\s]+/).map((s) => s.trim()).filter(Boolean),
      time_zone: tzSel.control.value,
      offers_free_consultation: free.checked,
    };
    setBusy(save, true, t('dash.saving'));
    try {
      const res = await api('/therapists/me', { method: 'PUT', body });
      updateUser({ display_name: res.display_name });
      status.replaceChildren(notice('success', t('dash.p_saved')));
      announce(t('dash.p_saved'));
    } catch (err) {
      if (err instanceof ApiError && err.errors.length) {
        for (const { field: f, message } of err.errors) {
          const key = f.replace(/\[\d+\]$/, '');
          if (fields[key]) fields[key].setError(message);
        }
        status.replaceChildren(notice('error', t('dash.p_check')));
      } else {
        status.replaceChildren(notice('error', describeError(err)));
      }
    } finally {
      setBusy(save, false);
    }
  });
  replace(box, form);
}
