// A therapist's profile, with the slot picker and booking for clients.

import { h, replace, field, select, notice, setBusy, announce } from '../lib/dom.js';
import { publicApi, api, ApiError, describeError, download } from '../lib/api.js';
import { loadVocabulary, labelFor } from '../lib/vocab.js';
import { languageName, fmtRange, userTimeZone, fmtDateTime, timeZoneLabel } from '../lib/format.js';
import { slotPicker } from '../components/slot-picker.js';
import { getConfig } from '../lib/config.js';
import { avatar } from './therapists.js';

export async function render(ctx) {
  const { root, params, user } = ctx;
  const page = h('section', { class: 'page' }, h('p', { class: 'loading' }, 'Loading…'));
  root.append(page);
  let t;
  let vocab = { specialisations: [], modalities: [] };
  try {
    [t, vocab] = await Promise.all([publicApi(`/therapists/${params.id}`), loadVocabulary().catch(() => vocab)]);
  } catch (err) {
    replace(page, h('h1', {}, 'Therapist not found'),
      notice('error', err instanceof ApiError && err.status === 404 ? 'This profile does not exist (any more).' : describeError(err)),
      h('p', {}, h('a', { href: '#/therapists' }, 'Back to the directory')));
    return undefined;
  }
  if (!ctx.alive()) return undefined;
  ctx.setTitle(t.display_name);

  const about = h('div', { class: 'card stack' },
    h('div', { class: 'person' }, avatar(t.display_name),
      h('div', {}, h('h1', {}, t.display_name),
        t.offers_free_consultation ? h('span', { class: 'badge' }, 'Offers a free consultation') : null)),
    t.bio ? h('p', { class: 'bio-text' }, t.bio) : h('p', { class: 'muted' }, 'No introduction yet.'),
    t.specialisations.length ? h('div', {}, h('h2', {}, 'Works with'), h('ul', { class: 'chips' }, t.specialisations.map((s) => h('li', { class: 'chip' }, labelFor(vocab.specialisations, s))))) : null,
    t.modalities.length ? h('div', {}, h('h2', {}, 'Approach'), h('ul', { class: 'chips' }, t.modalities.map((m) => h('li', { class: 'chip' }, labelFor(vocab.modalities, m))))) : null,
    t.qualifications.length ? h('div', {}, h('h2', {}, 'Qualifications'), h('ul', {}, t.qualifications.map((q) => h('li', {}, q)))) : null,
    t.languages.length ? h('p', {}, h('strong', {}, 'Languages: '), t.languages.map(languageName).join(', ')) : null,
    h('p', { class: 'small muted' }, `Works in ${timeZoneLabel(t.time_zone)} time.`));

  const booking = h('section', { class: 'card', 'aria-labelledby': 'booking-title' }, h('h2', { id: 'booking-title' }, 'Book a time'));
  replace(page,
    h('p', {}, h('a', { href: '#/therapists' }, '← All therapists')),
    h('div', { class: 'profile-layout' }, about, booking));

  if (!user) {
    booking.append(
      h('p', {}, 'Sign in to see the times you can book. It only takes a moment to create an account.'),
      h('div', { class: 'actions' },
        h('a', { class: 'button primary', href: `#/signin?next=${encodeURIComponent(`/therapists/${t.id}`)}` }, 'Sign in to book'),
        ctx.config.registration_open ? h('a', { class: 'button', href: '#/register' }, 'Create an account') : null));
    return undefined;
  }
  if (user.role !== 'client') {
    booking.append(h('p', { class: 'muted' }, user.role === 'therapist'
      ? 'Clients book their sessions here. You can see your own bookable times below.'
      : 'Clients book their sessions here.'));
  }
  return bookingArea(ctx, t, booking);
}

function bookingArea(ctx, t, booking) {
  const { user } = ctx;
  const status = h('div', { 'aria-live': 'polite' });
  const kinds = [{ value: 'session', label: 'Session' }];
  if (t.offers_free_consultation) kinds.push({ value: 'consultation', label: 'Free consultation' });
  const kind = field('Type of appointment', select(kinds, { id: 'slot-kind', value: 'session' }),
    { hint: t.offers_free_consultation ? 'A free consultation is a short first conversation to see if you are a good fit.' : null });
  const chosen = h('p', { class: 'chosen', id: 'slot-chosen' }, 'No time chosen yet.');
  const submit = h('button', { type: 'button', class: 'button primary', id: 'book-submit', disabled: true }, 'Book this time');
  const tz = userTimeZone();

  const picker = slotPicker({
    therapistId: t.id,
    kind: 'session',
    therapistZone: t.time_zone,
    onChange(iso) {
      submit.disabled = !iso || user.role !== 'client';
      if (iso) {
        const mins = picker.minutes();
        const end = mins ? new Date(new Date(iso).getTime() + mins * 60_000).toISOString() : null;
        chosen.textContent = `You chose ${end ? fmtRange(iso, end, tz) : fmtDateTime(iso, tz)} (your time).`;
      } else {
        chosen.textContent = 'No time chosen yet.';
      }
    },
  });
  kind.control.addEventListener('change', () => picker.setKind(kind.control.value));

  submit.addEventListener('click', async () => {
    const startsAt = picker.selected();
    if (!startsAt) return;
    status.replaceChildren();
    setBusy(submit, true, 'Booking…');
    try {
      const appt = await api('/appointments', { method: 'POST', body: { therapist_id: t.id, starts_at: startsAt, kind: kind.control.value } });
      announce('Your appointment is booked.');
      replace(booking, confirmation(appt, t, () => {
        replace(booking, h('h2', { id: 'booking-title' }, 'Book a time'));
        bookingArea(ctx, t, booking);
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
              ? 'Someone booked that time a moment ago. We have refreshed the free times: please choose another one.'
              : 'That time can no longer be booked. We have refreshed the free times: please choose another one.'),
          });
          announce('That time is no longer free. The list of times has been refreshed.');
          break;
        case 'consultation_already_used':
          status.replaceChildren(notice('warning', `You have already had your free consultation with ${t.display_name}. You can book a session instead.`));
          break;
        case 'client_busy':
          status.replaceChildren(notice('warning', 'You already have another appointment at that time. Please choose a different time.'));
          break;
        case 'consultation_not_offered':
          status.replaceChildren(notice('warning', `${t.display_name} does not offer a free consultation at the moment.`));
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

function confirmation(appt, t, again) {
  const tz = userTimeZone();
  const ics = h('button', { type: 'button', class: 'button' }, 'Add to my calendar (.ics)');
  ics.addEventListener('click', () => download(`/appointments/${appt.id}/calendar.ics`, 'alcove-appointment.ics').catch(() => {}));
  return h('div', { id: 'booking-confirmed', dataset: { appointmentId: appt.id }, role: 'status' },
    h('h2', {}, 'You are booked in'),
    notice('success',
      h('p', {}, `${appt.kind === 'consultation' ? 'Free consultation' : 'Session'} with ${t.display_name}`),
      h('p', { class: 'when' }, h('strong', {}, fmtRange(appt.starts_at, appt.ends_at, tz)), ` (${timeZoneLabel(tz)})`)),
    h('p', {}, `You can join from "My appointments" up to ${Math.round(getConfig().join_opens_before_seconds / 60)} minutes before it starts. We will check your camera and microphone first.`),
    h('div', { class: 'actions' }, h('a', { class: 'button primary', href: '#/appointments' }, 'Go to my appointments'), ics,
      h('button', { type: 'button', class: 'button quiet', onclick: again }, 'Book another time')));
}
