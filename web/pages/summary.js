// After the call: how long it lasted, with whom, and what next.

import { h, notice } from '../lib/dom.js';
import { api, describeError } from '../lib/api.js';
import { fmtDuration, fmtTime, fmtRange, userTimeZone } from '../lib/format.js';
import { readSummary } from '../call/session.js';
import { otherSide, kindLabel } from './appointments.js';

const REASONS = {
  ended_by_therapist: 'Your therapist ended the session.',
  window_closed: 'The time for this session is over.',
  appointment_cancelled: 'The appointment was cancelled.',
  appointment_changed: 'The appointment was moved to another time.',
  removed: 'You were taken off this appointment.',
  server_shutdown: 'The service restarted. If your session was not over, you can join again.',
  left: 'You left the session.',
};

export async function render(ctx) {
  const { root, params, user } = ctx;
  const tz = userTimeZone();
  const s = readSummary(params.id);
  const page = h('section', { class: 'page narrow' });
  root.append(page);

  const duration = s && s.startedAt ? fmtDuration((s.endedAt || Date.now()) - s.startedAt) : fmtDuration(0);
  page.append(
    h('h1', {}, 'Your session has ended'),
    h('div', { class: 'card stack' },
      h('p', { class: 'muted' }, 'Time together'),
      h('p', { class: 'summary-figure', id: 'call-duration' }, duration),
      s && s.startedAt ? h('p', {}, `From ${fmtTime(new Date(s.startedAt).toISOString(), tz)} to ${fmtTime(new Date(s.endedAt).toISOString(), tz)}.`) : h('p', { class: 'muted' }, 'The call did not connect, or it happened in another tab.'),
      s && s.reason && REASONS[s.reason] ? h('p', {}, REASONS[s.reason]) : null,
      s && s.seen && s.seen.length ? h('p', {}, `With ${s.seen.join(', ')}.`) : null));

  const next = h('div', { class: 'card stack section-gap' });
  page.append(next);
  let appt = null;
  try {
    appt = await api(`/appointments/${params.id}`);
  } catch (err) {
    next.append(notice('error', describeError(err)));
    return;
  }
  if (!ctx.alive()) return;
  next.append(h('p', {}, `${kindLabel(appt)} with ${otherSide(appt, user)}, ${fmtRange(appt.starts_at, appt.ends_at, tz)}.`));
  if (user.role === 'client') {
    next.append(
      h('p', {}, 'Take a few minutes for yourself before moving on to the rest of your day.'),
      h('div', { class: 'actions' },
        h('a', { class: 'button primary', href: `#/therapists/${appt.therapist.id}` }, `Book another time with ${appt.therapist.display_name}`),
        h('a', { class: 'button', href: '#/appointments' }, 'My appointments')));
  } else if (user.role === 'therapist') {
    const status = h('div', { 'aria-live': 'polite' });
    const mark = (what, label) => {
      const b = h('button', { type: 'button', class: 'button' }, label);
      b.addEventListener('click', async () => {
        try {
          await api(`/appointments/${appt.id}/${what}`, { method: 'POST' });
          status.replaceChildren(notice('success', what === 'complete' ? 'Recorded as completed.' : 'Recorded as missed.'));
        } catch (err) {
          status.replaceChildren(notice('error', describeError(err)));
        }
      });
      return b;
    };
    const canMark = appt.status === 'booked' && Date.now() >= Date.parse(appt.starts_at);
    next.append(status,
      h('div', { class: 'actions' },
        canMark ? mark('complete', 'Record as completed') : null,
        canMark ? mark('no-show', 'Record as missed') : null,
        h('a', { class: 'button primary', href: '#/dashboard' }, 'Back to the dashboard')));
  }
}
