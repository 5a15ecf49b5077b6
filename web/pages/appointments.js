// My appointments: upcoming (join, cancel, reschedule, .ics) and past, plus the private
// calendar feed.

import { h, replace, field, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError, download } from '../lib/api.js';
import { fmtRange, fmtTime, fmtDay, userTimeZone, relative, timeZoneLabel } from '../lib/format.js';
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
  return names.length ? names.join(', ') : 'no client';
}

export function kindLabel(appt) {
  return appt.kind === 'consultation' ? 'Free consultation' : 'Session';
}

export function inJoinWindow(appt, now = Date.now()) {
  return appt.status === 'booked' && now >= Date.parse(appt.join_opens_at) && now < Date.parse(appt.join_closes_at);
}

function statusBadge(appt, now) {
  if (appt.status === 'cancelled') {
    return [h('span', { class: 'badge off' }, 'Cancelled'), appt.late_cancellation ? h('span', { class: 'badge warn' }, 'Late cancellation') : null];
  }
  if (appt.status === 'completed') return h('span', { class: 'badge off' }, 'Completed');
  if (appt.status === 'no_show') return h('span', { class: 'badge warn' }, 'Missed');
  if (inJoinWindow(appt, now)) return h('span', { class: 'badge' }, 'Open now');
  if (now >= Date.parse(appt.join_closes_at)) return h('span', { class: 'badge off' }, 'Over');
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
    h('h1', {}, user.role === 'client' ? 'My appointments' : 'Appointments'),
    h('p', { class: 'muted' }, `Times are shown in your time zone: ${timeZoneLabel(tz)}.`),
    status,
    h('section', { 'aria-labelledby': 'upcoming-title', class: 'stack' },
      h('h2', { id: 'upcoming-title' }, 'Upcoming'),
      upcoming),
    h('section', { 'aria-labelledby': 'past-title', class: 'stack section-gap', id: 'past-section' },
      h('h2', { id: 'past-title' }, 'Past and cancelled'),
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
        ? h('span', {}, 'You have no upcoming appointments. ', h('a', { href: '#/therapists' }, 'Find a therapist'), ' to book one.')
        : 'No upcoming appointments.'));
    } else {
      updaters = [];
      replace(upcoming, ...items.upcoming.map((a) => upcomingItem(a, now)));
    }
    if (!items.past.length) replace(past, h('li', { class: 'muted' }, 'Nothing here yet.'));
    else replace(past, ...items.past.slice(0, pastShown).map((a) => pastItem(a, now)));
    replace(pastMore, items.past.length > pastShown
      ? h('button', { type: 'button', class: 'button small', onclick: () => { pastShown += 20; draw(); } }, 'Show earlier appointments')
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
    }, 'Join');
    join.addEventListener('click', () => ctx.navigate(`/precall/${a.id}`));
    const joinHint = h('span', { class: 'small muted join-hint', id: `join-hint-${a.id}` });
    // Updated in place by the page's timer, so focus is never lost to a redraw.
    const update = (t) => {
      // Admins see everyone's appointments but take part in none of them.
      const isOpen = inJoinWindow(a, t) && user.role !== 'admin';
      join.disabled = !isOpen;
      join.classList.toggle('primary', isOpen);
      joinHint.textContent = isOpen
        ? 'Your session room is open.'
        : `You can join from ${fmtTime(a.join_opens_at, tz)}${sameDay(a.join_opens_at, t) ? '' : ` on ${fmtDay(a.join_opens_at, tz)}`}.`;
      const hasStarted = t >= Date.parse(a.starts_at);
      cancel.disabled = hasStarted;
      resched.disabled = hasStarted || user.role === 'admin';
    };
    const cancel = h('button', { type: 'button', class: 'button small cancel-button', disabled: started, title: started ? 'It has started: it can no longer be cancelled.' : null }, 'Cancel');
    cancel.addEventListener('click', () => cancelDialog(a));
    const resched = h('button', { type: 'button', class: 'button small reschedule-button', disabled: started || user.role === 'admin', title: started ? 'It has started: it can no longer be moved.' : null }, 'Reschedule');
    resched.addEventListener('click', () => rescheduleDialog(a));
    const ics = h('button', { type: 'button', class: 'button small quiet ics-button' }, 'Add to calendar (.ics)');
    ics.addEventListener('click', () => download(`/appointments/${a.id}/calendar.ics`, `alcove-${a.starts_at.slice(0, 10)}.ics`)
      .catch((err) => status.replaceChildren(notice('error', describeError(err)))));
    update(now);
    updaters.push(update);
    return h('li', { class: 'card appointment', dataset: { id: a.id, status: a.status } },
      h('p', { class: 'when' }, fmtRange(a.starts_at, a.ends_at, tz), ' ', statusBadge(a, now)),
      h('p', {}, `${kindLabel(a)} with ${otherSide(a, user)}`, h('span', { class: 'muted' }, ` · ${relative(a.starts_at, now)}`)),
      h('div', { class: 'actions' }, join, cancel, resched, ics),
      joinHint);
  }

  function pastItem(a, now) {
    const actions = [];
    if (user.role === 'therapist' && a.status === 'booked' && now >= Date.parse(a.starts_at)) {
      actions.push(
        h('button', { type: 'button', class: 'button small', onclick: () => mark(a, 'complete') }, 'Mark completed'),
        h('button', { type: 'button', class: 'button small', onclick: () => mark(a, 'no-show') }, 'Mark as missed'));
    }
    return h('li', { class: 'card past-appointment', dataset: { id: a.id, status: a.status } },
      h('p', { class: 'when' }, fmtRange(a.starts_at, a.ends_at, tz), ' ', statusBadge(a, now)),
      h('p', {}, `${kindLabel(a)} with ${otherSide(a, user)}`),
      a.cancel_reason ? h('p', { class: 'small muted' }, `Reason given: ${a.cancel_reason}`) : null,
      actions.length ? h('div', { class: 'actions' }, actions) : null);
  }

  async function mark(a, what) {
    try {
      await api(`/appointments/${a.id}/${what}`, { method: 'POST' });
      status.replaceChildren(notice('success', what === 'complete' ? 'Marked as completed.' : 'Marked as missed.'));
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
    const windowText = windowSecs % 3600 === 0 ? `${windowSecs / 3600} hours` : `${Math.round(windowSecs / 60)} minutes`;
    const reason = field('Reason (optional)', h('textarea', { id: 'cancel-reason', maxlength: 500, rows: 3 }),
      { hint: user.role === 'client' ? 'Your therapist will see this.' : 'Your client will see this.' });
    const err = h('div', { 'aria-live': 'polite' });
    const confirm = h('button', { type: 'button', class: 'button danger', id: 'cancel-confirm' }, 'Cancel appointment');
    const keep = h('button', { type: 'button', class: 'button', id: 'cancel-keep' }, 'Keep it');
    const d = openDialog({
      id: 'cancel-dialog',
      title: 'Cancel this appointment?',
      content: [
        h('p', {}, `${kindLabel(a)} with ${otherSide(a, user)}, ${fmtRange(a.starts_at, a.ends_at, tz)}.`),
        late ? notice('warning', `This is less than ${windowText} before it starts, so it will be recorded as a late cancellation.`) : null,
        reason.wrap, err,
        h('div', { class: 'actions' }, confirm, keep),
      ],
    });
    keep.addEventListener('click', () => d.close());
    confirm.addEventListener('click', async () => {
      setBusy(confirm, true, 'Cancelling…');
      try {
        const body = reason.control.value.trim() ? { reason: reason.control.value.trim() } : {};
        const res = await api(`/appointments/${a.id}/cancel`, { method: 'POST', body });
        d.close();
        const msg = res.late_cancellation ? 'Your appointment is cancelled. It was recorded as a late cancellation.' : 'Your appointment is cancelled.';
        status.replaceChildren(notice('success', msg));
        announce(msg);
        load();
      } catch (e) {
        setBusy(confirm, false);
        if (e instanceof ApiError && e.code === 'validation_failed') reason.setError(e.fieldErrors().reason || e.detail);
        else err.replaceChildren(notice('error', e instanceof ApiError && e.code === 'appointment_started'
          ? 'It has already started, so it can no longer be cancelled.'
          : describeError(e)));
        if (e instanceof ApiError && (e.code === 'appointment_not_active' || e.code === 'appointment_started')) load();
      }
    });
  }

  function rescheduleDialog(a) {
    const err = h('div', { 'aria-live': 'polite' });
    const confirm = h('button', { type: 'button', class: 'button primary', id: 'reschedule-confirm', disabled: true }, 'Move to this time');
    const keep = h('button', { type: 'button', class: 'button' }, 'Keep the current time');
    let chosen = null;
    let picker = null;
    let custom = null;
    const content = [h('p', {}, `Now: ${fmtRange(a.starts_at, a.ends_at, tz)}. Choose a new time.`)];
    if (user.role === 'client') {
      picker = slotPicker({
        therapistId: a.therapist.id,
        kind: a.kind,
        label: 'New time',
        onChange(iso) { chosen = iso; confirm.disabled = !iso; },
      });
      content.push(picker.el);
    } else {
      // Therapists may move an appointment to any future time on a 5-minute mark.
      custom = field('New start (your time)', h('input', { type: 'datetime-local', id: 'reschedule-at', step: 300 }),
        { hint: 'On a 5-minute mark, e.g. 14:05.' });
      custom.control.addEventListener('input', () => {
        const v = custom.control.value;
        chosen = v ? new Date(v).toISOString() : null;
        confirm.disabled = !chosen;
      });
      content.push(custom.wrap);
    }
    content.push(err, h('div', { class: 'actions' }, confirm, keep));
    const d = openDialog({ id: 'reschedule-dialog', title: 'Reschedule', content });
    keep.addEventListener('click', () => d.close());
    if (picker) picker.load();
    confirm.addEventListener('click', async () => {
      if (!chosen) return;
      setBusy(confirm, true, 'Moving…');
      try {
        const res = await api(`/appointments/${a.id}/reschedule`, { method: 'POST', body: { starts_at: chosen } });
        d.close();
        const msg = `Moved to ${fmtRange(res.starts_at, res.ends_at, tz)}.`;
        status.replaceChildren(notice('success', msg));
        announce(msg);
        load();
      } catch (e) {
        setBusy(confirm, false);
        confirm.disabled = !chosen;
        if (e instanceof ApiError && e.code === 'slot_taken' && picker) {
          picker.reload({ message: notice('warning', 'Someone booked that time a moment ago. Here are the times still free.') });
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
      status.replaceChildren(notice('info', 'That appointment is not among yours here. If it was booked for another account, sign in with that one.'));
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
  const create = h('button', { type: 'button', class: 'button', id: 'feed-create' }, 'Create a private calendar link');
  const revoke = h('button', { type: 'button', class: 'button quiet', id: 'feed-revoke' }, 'Turn off my calendar link');
  create.addEventListener('click', async () => {
    setBusy(create, true, 'Creating…');
    try {
      const res = await api('/me/calendar-feed', { method: 'POST' });
      const input = h('input', { type: 'text', readonly: true, id: 'feed-url', class: 'feed-url', value: res.url });
      const copy = h('button', { type: 'button', class: 'button small' }, 'Copy link');
      copy.addEventListener('click', async () => {
        input.select();
        try {
          await navigator.clipboard.writeText(res.url);
          announce('Link copied.');
          copy.textContent = 'Copied';
        } catch {
          document.execCommand && document.execCommand('copy');
        }
      });
      replace(out, h('div', { class: 'field' }, h('label', { for: 'feed-url' }, 'Your private calendar link'), input),
        h('div', { class: 'actions' }, copy),
        notice('warning', 'Keep this link to yourself: anyone who has it can see the times of your appointments. Any older link has stopped working.'));
      status.replaceChildren();
      create.textContent = 'Replace with a new link';
      create.dataset.label = 'Replace with a new link';
    } catch (err) {
      status.replaceChildren(notice('error', describeError(err)));
    } finally {
      setBusy(create, false);
    }
  });
  revoke.addEventListener('click', async () => {
    setBusy(revoke, true, 'Turning off…');
    try {
      await api('/me/calendar-feed', { method: 'DELETE' });
      replace(out);
      status.replaceChildren(notice('success', 'Your calendar link no longer works. Calendars subscribed to it will stop updating.'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) status.replaceChildren(notice('info', 'You had no calendar link.'));
      else status.replaceChildren(notice('error', describeError(err)));
    } finally {
      setBusy(revoke, false);
    }
  });
  const card = h('section', { class: 'card section-gap', 'aria-labelledby': 'feed-title', id: 'calendar-feed' },
    h('h2', { id: 'feed-title' }, 'Your calendar'),
    h('p', {}, 'Subscribe to your appointments from your calendar app. Entries only say "Appointment" and the time, with the link to join: no names, nothing about your therapy.'),
    status, out,
    h('div', { class: 'actions' }, create, revoke));
  return card;
}
