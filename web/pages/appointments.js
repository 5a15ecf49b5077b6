// My appointments: upcoming (join, cancel, reschedule, .ics) and past, plus the private
// calendar feed.

import { t } from '../lib/i18n.js';
import { h, replace, field, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError, download } from '../lib/api.js';
import { fmtRange, fmtTime, fmtDay, userTimeZone, relative, timeZoneLabel, leadText } from '../lib/format.js';
import { openDialog } from '../components/dialog.js';
import { slotPicker } from '../components/slot-picker.js';
import { getConfig } from '../lib/config.js';

const DAY = 86_400_000;

/** Fetch every page of a list (bounded). */
export async function fetchAll(query, maxPages = 10) {
  const items = [];
  for (let page = 1; page <= maxPages; page += 1) {
    const res = await api('/appointments', { query: { ...query, page, per_page: 100 } });
    items.push(...res.items);
    if (items.length >= res.total || !res.items.length) break;
  }
  return items;
}

export function otherSide(appt, user) {
  if (user.role === 'client') return appt.therapist.display_name;
  const names = appt.clients.map((c) => c.display_name);
  return names.length ? names.join(', ') : t('appt.no_client');
}

export function kindLabel(appt) {
  return appt.kind === 'consultation' ? t('kind.consultation') : t('kind.session');
}

export function inJoinWindow(appt, now = Date.now()) {
  return appt.status === 'booked' && now >= Date.parse(appt.join_opens_at) && now < Date.parse(appt.join_closes_at);
}

function statusBadge(appt, now) {
  if (appt.status === 'cancelled') {
    return [h('span', { class: 'badge off' }, t('appt.cancelled')), appt.late_cancellation ? h('span', { class: 'badge warn' }, t('appt.late')) : null];
  }
  if (appt.status === 'completed') return h('span', { class: 'badge off' }, t('appt.completed'));
  if (appt.status === 'no_show') return h('span', { class: 'badge warn' }, t('appt.missed'));
  if (inJoinWindow(appt, now)) return h('span', { class: 'badge' }, t('appt.open_now'));
  if (now >= Date.parse(appt.join_closes_at)) return h('span', { class: 'badge off' }, t('appt.over'));
  return null;
}

export async function render(ctx) {
  const { root, user } = ctx;
  const tz = userTimeZone();
  const status = h('div', { 'aria-live': 'polite' });
  const upcoming = h('ul', { class: 'appointment-list', id: 'upcoming-list' });
  const past = h('ul', { class: 'appointment-list', id: 'past-list' });
  const pastMore = h('div', {});
  const page = h('section', { class: 'page' },
    h('h1', {}, user.role === 'client' ? t('appt.title_client') : t('appt.title')),
    h('p', { class: 'muted' }, t('appt.your_zone', { zone: timeZoneLabel(tz) })),
    status,
    h('section', { 'aria-labelledby': 'upcoming-title', class: 'stack' },
      h('h2', { id: 'upcoming-title' }, t('appt.upcoming')),
      upcoming),
    h('section', { 'aria-labelledby': 'past-title', class: 'stack section-gap', id: 'past-section' },
      h('h2', { id: 'past-title' }, t('appt.past')),
      past, pastMore),
    feedCard());
  root.append(page);

  let items = { upcoming: [], past: [] };
  let pastShown = 20;
  let updaters = [];
  let lastSig = '';

  const draw = () => {
    const now = Date.now();
    if (!items.upcoming.length) {
      replace(upcoming, h('li', { class: 'muted' }, user.role === 'client'
        ? h('span', {}, t('appt.none_client'), ' ', h('a', { href: '#/therapists' }, t('appt.find')))
        : t('appt.none')));
    } else {
      updaters = [];
      replace(upcoming, ...items.upcoming.map((a) => upcomingItem(a, now)));
    }
    if (!items.past.length) replace(past, h('li', { class: 'muted' }, t('appt.nothing')));
    else replace(past, ...items.past.slice(0, pastShown).map((a) => pastItem(a, now)));
    replace(pastMore, items.past.length > pastShown
      ? h('button', { type: 'button', class: 'button small', onclick: () => { pastShown += 20; draw(); } }, t('appt.earlier'))
      : null);
  };

  const load = async () => {
    const now = Date.now();
    try {
      const [booked, recent] = await Promise.all([
        fetchAll({ status: 'booked', from: new Date(now - DAY).toISOString(), to: new Date(now + 395 * DAY).toISOString() }),
        fetchAll({ from: new Date(now - 365 * DAY).toISOString(), to: new Date(now + 30 * DAY).toISOString() }, 5),
      ]);
      const up = booked.filter((a) => Date.parse(a.join_closes_at) > now).sort((a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at));
      const upIds = new Set(up.map((a) => a.id));
      const rest = recent.filter((a) => !upIds.has(a.id)).sort((a, b) => Date.parse(b.starts_at) - Date.parse(a.starts_at));
      if (!ctx.alive()) return;
      // Redraw only when something changed: a redraw would move keyboard focus.
      const sig = JSON.stringify([up, rest].map((l) => l.map((a) => [a.id, a.status, a.starts_at, a.late_cancellation])));
      items = { upcoming: up, past: rest };
      if (sig === lastSig) return;
      lastSig = sig;
      draw();
    } catch (err) {
      if (!ctx.alive()) return;
      status.replaceChildren(notice('error', describeError(err)));
    }
  };

  function upcomingItem(a, now) {
    const open = inJoinWindow(a, now);
    const started = now >= Date.parse(a.starts_at);
    const join = h('button', {
      type: 'button',
      class: `button ${open ? 'primary' : ''} join-button`,
      disabled: !open,
      'aria-describedby': `join-hint-${a.id}`,
    }, t('appt.join'));
    join.addEventListener('click', () => ctx.navigate(`/precall/${a.id}`));
    const joinHint = h('span', { class: 'small muted join-hint', id: `join-hint-${a.id}` });
    // Updated in place by the page's timer, so focus is never lost to a redraw.
    const update = (at) => {
      // Admins see everyone's appointments but take part in none of them.
      const isOpen = inJoinWindow(a, at) && user.role !== 'admin';
      join.disabled = !isOpen;
      join.classList.toggle('primary', isOpen);
      joinHint.textContent = isOpen
        ? t('appt.room_open')
        : sameDay(a.join_opens_at, at)
          ? t('appt.join_from', { time: fmtTime(a.join_opens_at, tz) })
          : t('appt.join_from_day', { time: fmtTime(a.join_opens_at, tz), day: fmtDay(a.join_opens_at, tz) });
      const hasStarted = at >= Date.parse(a.starts_at);
      cancel.disabled = hasStarted;
      resched.disabled = hasStarted || user.role === 'admin';
    };
    const cancel = h('button', { type: 'button', class: 'button small cancel-button', disabled: started, title: started ? t('appt.started_no_cancel') : null }, t('appt.cancel'));
    cancel.addEventListener('click', () => cancelDialog(a));
    const resched = h('button', { type: 'button', class: 'button small reschedule-button', disabled: started || user.role === 'admin', title: started ? t('appt.started_no_move') : null }, t('appt.reschedule'));
    resched.addEventListener('click', () => rescheduleDialog(a));
    const ics = h('button', { type: 'button', class: 'button small quiet ics-button' }, t('appt.ics'));
    ics.addEventListener('click', () => download(`/appointments/${a.id}/calendar.ics`, `alcove-${a.starts_at.slice(0, 10)}.ics`)
      .catch((err) => status.replaceChildren(notice('error', describeError(err)))));
    update(now);
    updaters.push(update);
    return h('li', { class: 'card appointment', dataset: { id: a.id, status: a.status } },
      h('p', { class: 'when' }, h('span', { 'data-intl': '' }, fmtRange(a.starts_at, a.ends_at, tz)), ' ', statusBadge(a, now)),
      h('p', {}, t('appt.with', { kind: kindLabel(a), name: otherSide(a, user) }), h('span', { class: 'muted', 'data-intl': '' }, ` · ${relative(a.starts_at, now)}`)),
      h('div', { class: 'actions' }, join, cancel, resched, ics),
      joinHint);
  }

  function pastItem(a, now) {
    const actions = [];
    if (user.role === 'therapist' && a.status === 'booked' && now >= Date.parse(a.starts_at)) {
      actions.push(
        h('button', { type: 'button', class: 'button small', onclick: () => mark(a, 'complete') }, t('appt.mark_completed')),
        h('button', { type: 'button', class: 'button small', onclick: () => mark(a, 'no-show') }, t('appt.mark_missed')));
    }
    return h('li', { class: 'card past-appointment', dataset: { id: a.id, status: a.status } },
      h('p', { class: 'when' }, h('span', { 'data-intl': '' }, fmtRange(a.starts_at, a.ends_at, tz)), ' ', statusBadge(a, now)),
      h('p', {}, t('appt.with', { kind: kindLabel(a), name: otherSide(a, user) })),
      a.cancel_reason ? h('p', { class: 'small muted' }, t('appt.reason_given', { reason: a.cancel_reason })) : null,
      actions.length ? h('div', { class: 'actions' }, actions) : null);
  }

  async function mark(a, what) {
    try {
      await api(`/appointments/${a.id}/${what}`, { method: 'POST' });
      status.replaceChildren(notice('success', what === 'complete' ? t('appt.marked_completed') : t('appt.marked_missed')));
      load();
    } catch (err) {
      status.replaceChildren(notice('error', describeError(err)));
    }
  }

  function cancelDialog(a) {
    const now = Date.now();
    // Only to warn: the server decides what is late (ALCOVE_LATE_CANCEL_WINDOW).
    const windowSecs = getConfig().late_cancel_window_seconds;
    const late = user.role === 'client' && Date.parse(a.starts_at) - now < windowSecs * 1000;
    const windowText = leadText(windowSecs % 60 === 0 ? windowSecs : Math.round(windowSecs / 60) * 60);
    const reason = field(t('appt.reason'), h('textarea', { id: 'cancel-reason', maxlength: 500, rows: 3 }),
      { hint: user.role === 'client' ? t('appt.reason_hint_client') : t('appt.reason_hint_therapist') });
    const err = h('div', { 'aria-live': 'polite' });
    const confirm = h('button', { type: 'button', class: 'button danger', id: 'cancel-confirm' }, t('appt.cancel_confirm'));
    const keep = h('button', { type: 'button', class: 'button', id: 'cancel-keep' }, t('appt.keep'));
    const d = openDialog({
      id: 'cancel-dialog',
      title: t('appt.cancel_title'),
      content: [
        h('p', {}, t('appt.what_when', { kind: kindLabel(a), name: otherSide(a, user), when: fmtRange(a.starts_at, a.ends_at, tz) })),
        late ? notice('warning', t('appt.late_warning', { window: windowText })) : null,
        reason.wrap, err,
        h('div', { class: 'actions' }, confirm, keep),
      ],
    });
    keep.addEventListener('click', () => d.close());
    confirm.addEventListener('click', async () => {
      setBusy(confirm, true, t('appt.cancelling'));
      try {
        const body = reason.control.value.trim() ? { reason: reason.control.value.trim() } : {};
        const res = await api(`/appointments/${a.id}/cancel`, { method: 'POST', body });
        d.close();
        const msg = res.late_cancellation ? t('appt.cancelled_late') : t('appt.cancelled_done');
        status.replaceChildren(notice('success', msg));
        announce(msg);
        load();
      } catch (e) {
        setBusy(confirm, false);
        if (e instanceof ApiError && e.code === 'validation_failed') reason.setError(e.fieldErrors().reason || e.detail);
        else err.replaceChildren(notice('error', e instanceof ApiError && e.code === 'appointment_started'
          ? t('appt.started_already')
          : describeError(e)));
        if (e instanceof ApiError && (e.code === 'appointment_not_active' || e.code === 'appointment_started')) load();
      }
    });
  }

  function rescheduleDialog(a) {
    const err = h('div', { 'aria-live': 'polite' });
    const confirm = h('button', { type: 'button', class: 'button primary', id: 'reschedule-confirm', disabled: true }, t('appt.move'));
    const keep = h('button', { type: 'button', class: 'button' }, t('appt.keep_time'));
    let chosen = null;
    let picker = null;
    let custom = null;
    const content = [h('p', {}, t('appt.now_choose', { when: fmtRange(a.starts_at, a.ends_at, tz) }))];
    if (user.role === 'client') {
      picker = slotPicker({
        therapistId: a.therapist.id,
        kind: a.kind,
        label: t('appt.new_time'),
        onChange(iso) { chosen = iso; confirm.disabled = !iso; },
      });
      content.push(picker.el);
    } else {
      // Therapists may move an appointment to any future time on a 5-minute mark.
      custom = field(t('appt.new_start'), h('input', { type: 'datetime-local', id: 'reschedule-at', step: 300 }),
        { hint: t('appt.new_start_hint') });
      custom.control.addEventListener('input', () => {
        const v = custom.control.value;
        chosen = v ? new Date(v).toISOString() : null;
        confirm.disabled = !chosen;
      });
      content.push(custom.wrap);
    }
    content.push(err, h('div', { class: 'actions' }, confirm, keep));
    const d = openDialog({ id: 'reschedule-dialog', title: t('appt.reschedule_title'), content });
    keep.addEventListener('click', () => d.close());
    if (picker) picker.load();
    confirm.addEventListener('click', async () => {
      if (!chosen) return;
      setBusy(confirm, true, t('appt.moving'));
      try {
        const res = await api(`/appointments/${a.id}/reschedule`, { method: 'POST', body: { starts_at: chosen } });
        d.close();
        const msg = t('appt.moved', { when: fmtRange(res.starts_at, res.ends_at, tz) });
        status.replaceChildren(notice('success', msg));
        announce(msg);
        load();
      } catch (e) {
        setBusy(confirm, false);
        confirm.disabled = !chosen;
        if (e instanceof ApiError && e.code === 'slot_taken' && picker) {
          picker.reload({ message: notice('warning', t('appt.taken')) });
        } else {
          err.replaceChildren(notice('error', describeError(e)));
        }
      }
    });
  }

  await load();
  // A link to one appointment (from an email or a calendar file) shows the list with that
  // appointment marked and focused.
  if (ctx.params && ctx.params.id) {
    const item = [...page.querySelectorAll('[data-id]')].find((el) => el.dataset.id === ctx.params.id);
    if (item) {
      item.classList.add('linked');
      item.setAttribute('aria-current', 'true');
      item.tabIndex = -1;
      item.scrollIntoView({ block: 'center' });
      item.focus();
    } else if (ctx.alive()) {
      status.replaceChildren(notice('info', t('appt.not_yours')));
    }
  }
  // Join buttons open by themselves when the join window starts.
  let ticks = 0;
  const timer = setInterval(() => {
    if (!ctx.alive()) return;
    ticks += 1;
    const now = Date.now();
    // Every 15 s the join buttons update in place; every minute the list is fetched again
    // (an appointment booked or cancelled elsewhere shows up without a reload).
    if (ticks % 4 === 0 || items.upcoming.some((a) => now >= Date.parse(a.join_closes_at))) load();
    updaters.forEach((u) => u(now));
  }, 15_000);
  const onVisible = () => { if (!document.hidden && ctx.alive()) load(); };
  document.addEventListener('visibilitychange', onVisible);
  return () => { clearInterval(timer); document.removeEventListener('visibilitychange', onVisible); };
}

function sameDay(iso, now) {
  return new Date(iso).toDateString() === new Date(now).toDateString();
}

function feedCard() {
  const status = h('div', { 'aria-live': 'polite' });
  const out = h('div', {});
  const create = h('button', { type: 'button', class: 'button', id: 'feed-create' }, t('feed.create'));
  const revoke = h('button', { type: 'button', class: 'button quiet', id: 'feed-revoke' }, t('feed.revoke'));
  create.addEventListener('click', async () => {
    setBusy(create, true, t('feed.creating'));
    try {
      const res = await api('/me/calendar-feed', { method: 'POST' });
      const input = h('input', { type: 'text', readonly: true, id: 'feed-url', class: 'feed-url', value: res.url });
      const copy = h('button', { type: 'button', class: 'button small' }, t('feed.copy'));
      copy.addEventListener('click', async () => {
        input.select();
        try {
          await navigator.clipboard.writeText(res.url);
          announce(t('feed.copied_said'));
          copy.textContent = t('feed.copied');
        } catch {
          document.execCommand && document.execCommand('copy');
        }
      });
      replace(out, h('div', { class: 'field' }, h('label', { for: 'feed-url' }, t('feed.url')), input),
        h('div', { class: 'actions' }, copy),
        notice('warning', t('feed.keep_private')));
      status.replaceChildren();
      create.textContent = t('feed.replace');
      create.dataset.label = t('feed.replace');
    } catch (err) {
      status.replaceChildren(notice('error', describeError(err)));
    } finally {
      setBusy(create, false);
    }
  });
  revoke.addEventListener('click', async () => {
    setBusy(revoke, true, t('feed.turning_off'));
    try {
      await api('/me/calendar-feed', { method: 'DELETE' });
      replace(out);
      status.replaceChildren(notice('success', t('feed.off')));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) status.replaceChildren(notice('info', t('feed.none')));
      else status.replaceChildren(notice('error', describeError(err)));
    } finally {
      setBusy(revoke, false);
    }
  });
  const card = h('section', { class: 'card section-gap', 'aria-labelledby': 'feed-title', id: 'calendar-feed' },
    h('h2', { id: 'feed-title' }, t('feed.title')),
    h('p', {}, t('feed.intro')),
    status, out,
    h('div', { class: 'actions' }, create, revoke));
  return card;
}
