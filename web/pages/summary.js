// After the call: how long it lasted, with whom, and what next.

import { h, notice } from '../lib/dom.js';
import { api, describeError } from '../lib/api.js';
import { fmtDuration, fmtTime, fmtRange, userTimeZone } from '../lib/format.js';
import { readSummary } from '../call/session.js';
import { otherSide, kindLabel } from './appointments.js';
import { t } from '../lib/i18n.js';

const REASONS = ['ended_by_therapist', 'window_closed', 'appointment_cancelled', 'appointment_changed', 'removed', 'server_shutdown', 'left'];

export async function render(ctx) {
  const { root, params, user } = ctx;
  const tz = userTimeZone();
  const s = readSummary(params.id);
  const page = h('section', { class: 'page narrow' });
  root.append(page);

  const duration = s && s.startedAt ? fmtDuration((s.endedAt || Date.now()) - s.startedAt) : fmtDuration(0);
  page.append(
    h('h1', {}, t('summary.title')),
    h('div', { class: 'card stack' },
      h('p', { class: 'muted' }, t('summary.time_together')),
      h('p', { class: 'summary-figure', id: 'call-duration', 'data-intl': '' }, duration),
      s && s.startedAt ? h('p', {}, t('summary.from_to', { start: fmtTime(new Date(s.startedAt).toISOString(), tz), end: fmtTime(new Date(s.endedAt).toISOString(), tz) })) : h('p', { class: 'muted' }, t('summary.no_call')),
      s && s.reason && REASONS.includes(s.reason) ? h('p', {}, t(`summary.${s.reason}`)) : null,
      s && s.seen && s.seen.length ? h('p', {}, t('summary.with', { names: s.seen.join(', ') })) : null));

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
  next.append(h('p', {}, t('appt.what_when', { kind: kindLabel(appt), name: otherSide(appt, user), when: fmtRange(appt.starts_at, appt.ends_at, tz) })));
  if (user.role === 'client') {
    next.append(
      h('p', {}, t('summary.take_time')),
      h('div', { class: 'actions' },
        h('a', { class: 'button primary', href: `#/therapists/${appt.therapist.id}` }, t('summary.book_again', { name: appt.therapist.display_name })),
        h('a', { class: 'button', href: '#/appointments' }, t('summary.my_appointments'))));
  } else if (user.role === 'therapist') {
    const status = h('div', { 'aria-live': 'polite' });
    const mark = (what, label) => {
      const b = h('button', { type: 'button', class: 'button' }, label);
      b.addEventListener('click', async () => {
        try {
          await api(`/appointments/${appt.id}/${what}`, { method: 'POST' });
          status.replaceChildren(notice('success', what === 'complete' ? t('summary.recorded_completed') : t('summary.recorded_missed')));
        } catch (err) {
          status.replaceChildren(notice('error', describeError(err)));
        }
      });
      return b;
    };
    const canMark = appt.status === 'booked' && Date.now() >= Date.parse(appt.starts_at);
    next.append(status,
      h('div', { class: 'actions' },
        canMark ? mark('complete', t('summary.record_completed')) : null,
        canMark ? mark('no-show', t('summary.record_missed')) : null,
        h('a', { class: 'button primary', href: '#/dashboard' }, t('summary.back_dashboard'))));
  }
}
