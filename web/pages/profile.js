// A therapist's profile, with the slot picker and booking for clients.

import { t } from '../lib/i18n.js';
import { h, replace, field, select, notice, setBusy, announce } from '../lib/dom.js';
import { publicApi, api, ApiError, describeError, download } from '../lib/api.js';
import { loadVocabulary, labelFor } from '../lib/vocab.js';
import { languageName, fmtRange, userTimeZone, fmtDateTime, timeZoneLabel } from '../lib/format.js';
import { slotPicker } from '../components/slot-picker.js';
import { getConfig } from '../lib/config.js';
import { avatar } from './therapists.js';

export async function render(ctx) {
  const { root, params, user } = ctx;
  const page = h('section', { class: 'page' }, h('p', { class: 'loading' }, t('profile.loading')));
  root.append(page);
  let th;
  let vocab = { specialisations: [], modalities: [] };
  try {
    [th, vocab] = await Promise.all([publicApi(`/therapists/${params.id}`), loadVocabulary().catch(() => vocab)]);
  } catch (err) {
    replace(page, h('h1', {}, t('profile.not_found_title')),
      notice('error', err instanceof ApiError && err.status === 404 ? t('profile.gone') : describeError(err)),
      h('p', {}, h('a', { href: '#/therapists' }, t('profile.back'))));
    return undefined;
  }
  if (!ctx.alive()) return undefined;
  ctx.setTitle(th.display_name);

  const about = h('div', { class: 'card stack' },
    h('div', { class: 'person' }, avatar(th.display_name),
      h('div', {}, h('h1', { translate: 'no' }, th.display_name),
        th.offers_free_consultation ? h('span', { class: 'badge' }, t('profile.free')) : null)),
    th.bio ? h('p', { class: 'bio-text', translate: 'no' }, th.bio) : h('p', { class: 'muted' }, t('profile.no_intro')),
    th.specialisations.length ? h('div', {}, h('h2', {}, t('profile.works_with')), h('ul', { class: 'chips' }, th.specialisations.map((s) => h('li', { class: 'chip' }, labelFor(vocab.specialisations, s))))) : null,
    th.modalities.length ? h('div', {}, h('h2', {}, t('profile.approach')), h('ul', { class: 'chips' }, th.modalities.map((m) => h('li', { class: 'chip' }, labelFor(vocab.modalities, m))))) : null,
    th.qualifications.length ? h('div', {}, h('h2', {}, t('profile.qualifications')), h('ul', { translate: 'no' }, th.qualifications.map((q) => h('li', {}, q)))) : null,
    th.languages.length ? h('p', {}, t('profile.languages', { languages: th.languages.map(languageName).join(', ') })) : null,
    h('p', { class: 'small muted' }, t('profile.works_in', { zone: timeZoneLabel(th.time_zone) })));

  const booking = h('section', { class: 'card', 'aria-labelledby': 'booking-title' }, h('h2', { id: 'booking-title' }, t('profile.book_title')));
  replace(page,
    h('p', {}, h('a', { href: '#/therapists' }, t('profile.all'))),
    h('div', { class: 'profile-layout' }, about, booking));

  if (!user) {
    booking.append(
      h('p', {}, t('profile.sign_in_first')),
      h('div', { class: 'actions' },
        h('a', { class: 'button primary', href: `#/signin?next=${encodeURIComponent(`/therapists/${th.id}`)}` }, t('profile.sign_in_to_book')),
        ctx.config.registration_open ? h('a', { class: 'button', href: '#/register' }, t('profile.create')) : null));
    return undefined;
  }
  if (user.role !== 'client') {
    booking.append(h('p', { class: 'muted' }, user.role === 'therapist'
      ? t('profile.clients_book_own')
      : t('profile.clients_book')));
  }
  return bookingArea(ctx, th, booking);
}

function bookingArea(ctx, th, booking) {
  const { user } = ctx;
  const status = h('div', { 'aria-live': 'polite' });
  const kinds = [{ value: 'session', label: t('kind.session') }];
  if (th.offers_free_consultation) kinds.push({ value: 'consultation', label: t('kind.consultation') });
  const kind = field(t('profile.kind'), select(kinds, { id: 'slot-kind', value: 'session' }),
    { hint: th.offers_free_consultation ? t('profile.kind_hint') : null });
  const chosen = h('p', { class: 'chosen', id: 'slot-chosen' }, t('profile.none_chosen'));
  const submit = h('button', { type: 'button', class: 'button primary', id: 'book-submit', disabled: true }, t('profile.book'));
  const tz = userTimeZone();

  const picker = slotPicker({
    therapistId: th.id,
    kind: 'session',
    therapistZone: th.time_zone,
    onChange(iso) {
      submit.disabled = !iso || user.role !== 'client';
      if (iso) {
        const mins = picker.minutes();
        const end = mins ? new Date(new Date(iso).getTime() + mins * 60_000).toISOString() : null;
        chosen.textContent = t('profile.chosen', { when: end ? fmtRange(iso, end, tz) : fmtDateTime(iso, tz) });
      } else {
        chosen.textContent = t('profile.none_chosen');
      }
    },
  });
  kind.control.addEventListener('change', () => picker.setKind(kind.control.value));

  submit.addEventListener('click', async () => {
    const startsAt = picker.selected();
    if (!startsAt) return;
    status.replaceChildren();
    setBusy(submit, true, t('profile.booking'));
    try {
      const appt = await api('/appointments', { method: 'POST', body: { therapist_id: th.id, starts_at: startsAt, kind: kind.control.value } });
      announce(t('profile.booked_said'));
      replace(booking, confirmation(appt, th, () => {
        replace(booking, h('h2', { id: 'booking-title' }, t('profile.book_title')));
        bookingArea(ctx, th, booking);
      }));
      const heading = booking.querySelector('h2');
      heading.setAttribute('tabindex', '-1');
      heading.focus();
    } catch (err) {
      setBusy(submit, false);
      submit.disabled = !picker.selected();
      if (!(err instanceof ApiError)) {
        status.replaceChildren(notice('error', describeError(err)));
        return;
      }
      switch (err.code) {
        case 'slot_taken':
        case 'too_short_notice':
        case 'starts_in_past':
        case 'misaligned_start':
        case 'outside_availability':
          picker.reload({
            message: notice('warning', err.code === 'slot_taken'
              ? t('profile.taken')
              : t('profile.gone_time')),
          });
          announce(t('profile.taken_said'));
          break;
        case 'consultation_already_used':
          status.replaceChildren(notice('warning', t('profile.consultation_used', { name: th.display_name })));
          break;
        case 'client_busy':
          status.replaceChildren(notice('warning', t('profile.client_busy')));
          break;
        case 'consultation_not_offered':
          status.replaceChildren(notice('warning', t('profile.no_consultation', { name: th.display_name })));
          break;
        default:
          status.replaceChildren(notice('error', describeError(err)));
      }
    }
  });

  booking.append(
    kind.wrap,
    picker.el,
    h('div', { class: 'booking-bar' }, status, chosen, h('div', { class: 'actions' }, submit)));
  picker.load();
  return undefined;
}

function confirmation(appt, th, again) {
  const tz = userTimeZone();
  const ics = h('button', { type: 'button', class: 'button' }, t('profile.add_calendar'));
  ics.addEventListener('click', () => download(`/appointments/${appt.id}/calendar.ics`, 'alcove-appointment.ics').catch(() => {}));
  return h('div', { id: 'booking-confirmed', dataset: { appointmentId: appt.id }, role: 'status' },
    h('h2', {}, t('profile.booked_title')),
    notice('success',
      h('p', {}, t('profile.with', { kind: appt.kind === 'consultation' ? t('kind.consultation') : t('kind.session'), name: th.display_name })),
      h('p', { class: 'when' }, h('strong', {}, fmtRange(appt.starts_at, appt.ends_at, tz)), ` (${timeZoneLabel(tz)})`)),
    h('p', {}, t('profile.join_from', { count: Math.round(getConfig().join_opens_before_seconds / 60) })),
    h('div', { class: 'actions' }, h('a', { class: 'button primary', href: '#/appointments' }, t('profile.go_appointments')), ics,
      h('button', { type: 'button', class: 'button quiet', onclick: again }, t('profile.again'))));
}
