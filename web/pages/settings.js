// Settings: email reminders and the time zone of emails, relay-only privacy mode, password.

import { h, field, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError } from '../lib/api.js';
import { logout } from '../lib/auth.js';
import { leadText } from '../lib/format.js';

export async function render(ctx) {
  const { root, config, user } = ctx;
  const page = h('section', { class: 'page narrow' },
    h('h1', {}, 'Settings'),
    h('p', { class: 'muted' }, `Signed in as ${user.display_name} (${user.email}).`));
  root.append(page);
  page.append(await emailCard(), await privacyCard(config), passwordCard(user), signOutEverywhereCard());
}

async function emailCard() {
  const status = h('div', { 'aria-live': 'polite', id: 'email-status' });
  const card = h('section', { class: 'card section-gap', 'aria-labelledby': 'email-title' },
    h('h2', { id: 'email-title' }, 'Emails'));
  let s;
  try {
    s = await api('/me/settings');
  } catch (err) {
    card.append(notice('error', describeError(err)));
    return card;
  }
  if (!s.mail_enabled) {
    card.append(h('p', { id: 'email-off' }, 'This service does not send emails: check your appointments here.'));
    return card;
  }
  const leads = s.reminder_lead_seconds.map(leadText);
  const when = leads.length ? ` (${leads.join(' and ')} before it starts)` : '';
  card.append(h('p', {}, 'You get an email when an appointment is booked, moved or cancelled. The emails never say what the appointment is about; their link asks you to sign in.'));
  const box = h('input', { type: 'checkbox', id: 'email-reminders' });
  box.checked = s.email_reminders;
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const current = s.time_zone || here || 'UTC';
  const options = [...new Set([current, ...zones])].sort();
  const zone = field('Time zone of the times in your emails',
    h('select', { id: 'email-time-zone' }, ...options.map((z) => h('option', { value: z }, z.replace(/_/g, ' ')))),
    { hint: here ? `This browser is in ${here.replace(/_/g, ' ')}.` : undefined });
  zone.control.value = current;
  const save = h('button', { type: 'submit', class: 'button primary', id: 'email-save' }, 'Save');
  const form = h('form', {},
    h('div', { class: 'check' }, box, h('label', { for: 'email-reminders' }, `Email me a reminder before each appointment${when}`)),
    zone.wrap, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    zone.setError(null);
    setBusy(save, true, 'Saving…');
    try {
      const res = await api('/me/settings', { method: 'PATCH', body: { email_reminders: box.checked, time_zone: zone.control.value } });
      box.checked = res.email_reminders;
      const msg = res.email_reminders ? 'Saved. You will get reminders by email.' : 'Saved. You will not get reminders by email; other appointment emails still come.';
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      if (err instanceof ApiError && err.fieldErrors().time_zone) zone.setError('Please choose a time zone from the list.');
      else status.replaceChildren(notice('error', describeError(err)));
    } finally {
      setBusy(save, false);
    }
  });
  card.append(form);
  return card;
}

function signOutEverywhereCard() {
  const status = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'button', id: 'sign-out-everywhere' }, 'Sign out everywhere');
  button.addEventListener('click', async () => {
    if (!window.confirm('Sign out on every device and browser, this one included? Your calendar feed link will stop working too.')) return;
    setBusy(button, true, 'Signing out…');
    try {
      const r = await api('/me/sign-out-everywhere', { method: 'POST' });
      const n = r.sign_ins_ended;
      await logout(`You signed out everywhere (${n === 1 ? 'one sign-in' : `${n} sign-ins`}).${r.calendar_feed_revoked ? ' Your calendar feed link no longer works; you can make a new one after signing in.' : ''}`);
    } catch (err) {
      status.replaceChildren(notice('error', describeError(err)));
      setBusy(button, false);
    }
  });
  return h('section', { class: 'card section-gap', 'aria-labelledby': 'everywhere-title' },
    h('h2', { id: 'everywhere-title' }, 'Signed in somewhere else?'),
    h('p', {}, 'If you signed in on a computer that is not yours, or lost a device, sign out everywhere. Every sign-in ends, this one included, and any session link you opened from them stops working.'),
    status, h('div', { class: 'actions' }, button));
}

async function privacyCard(config) {
  const status = h('div', { 'aria-live': 'polite' });
  const box = h('input', { type: 'checkbox', id: 'relay-only' });
  const save = h('button', { type: 'submit', class: 'button primary', id: 'privacy-save' }, 'Save');
  const card = h('section', { class: 'card', 'aria-labelledby': 'privacy-title' },
    h('h2', { id: 'privacy-title' }, 'Privacy during calls'),
    h('p', {}, 'Normally your video goes directly to the other person, which means each of you can technically learn the other\'s internet address. With relay-only calls it always goes through our relay server (still encrypted end to end), so the other person never learns your address. Calls may have slightly more delay.'));
  if (!config.relay_available) {
    box.disabled = true;
    save.disabled = true;
    card.append(notice('info', 'Relay-only calls are not available on this service.'));
  } else if (config.relay_enforced) {
    box.disabled = true;
    box.checked = true;
    save.disabled = true;
    card.append(notice('info', 'Every call on this service already goes through the relay.'));
  }
  const effect = h('p', { id: 'privacy-effect', class: 'small' });
  const showEffect = (p) => {
    effect.dataset.effective = p.effective;
    effect.textContent = {
      relayed: 'Your next call goes through the relay: the other person does not learn your internet address.',
      direct: 'Your next call connects directly where the network allows: the other person may learn your internet address.',
      refused: 'You chose relay-only calls, but this service has no relay right now. To protect your address you will not be connected to calls until the relay is back, or until you switch relay-only off here.',
    }[p.effective] || '';
    if (p.effective === 'refused') {
      // Switching it off must stay possible even though it cannot be switched on here.
      box.disabled = false;
      save.disabled = false;
    }
  };
  try {
    const p = await api('/me/privacy');
    box.checked = p.relay_only;
    showEffect(p);
  } catch (err) {
    status.append(notice('error', describeError(err)));
  }
  const form = h('form', {},
    h('div', { class: 'check' }, box, h('label', { for: 'relay-only' }, 'Relay-only calls (hide my internet address)')),
    effect, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setBusy(save, true, 'Saving…');
    try {
      const res = await api('/me/privacy', { method: 'PUT', body: { relay_only: box.checked } });
      box.checked = res.relay_only;
      showEffect(res);
      const msg = res.relay_only ? 'Relay-only calls are on. This applies from your next call.' : 'Relay-only calls are off.';
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      let msg = describeError(err);
      if (err instanceof ApiError && err.code === 'relay_unavailable') msg = 'Relay-only calls are not available on this service.';
      if (err instanceof ApiError && err.code === 'relay_enforced') msg = 'Every call on this service goes through the relay; it cannot be switched off.';
      status.replaceChildren(notice('error', msg));
    } finally {
      setBusy(save, false);
      if ((!config.relay_available && !box.checked) || config.relay_enforced) save.disabled = true;
    }
  });
  card.append(form);
  return card;
}

function passwordCard(user) {
  const status = h('div', { 'aria-live': 'polite' });
  const current = field('Current password', h('input', { type: 'password', id: 'password-current', autocomplete: 'current-password' }));
  const next = field('New password', h('input', { type: 'password', id: 'password-new', autocomplete: 'new-password', minlength: 10, maxlength: 128 }),
    { hint: 'At least 10 characters. A short sentence you will remember works well.' });
  const hiddenUser = h('input', { type: 'email', autocomplete: 'username', value: user.email, hidden: true, readonly: true, tabindex: '-1', 'aria-hidden': 'true' });
  const save = h('button', { type: 'submit', class: 'button primary', id: 'password-save' }, 'Change password');
  const form = h('form', { novalidate: true }, hiddenUser, current.wrap, next.wrap, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    current.setError(null);
    next.setError(null);
    status.replaceChildren();
    if (!current.control.value) {
      current.setError('Please enter your current password.');
      current.control.focus();
      return;
    }
    setBusy(save, true, 'Changing…');
    try {
      const r = await api('/me/password', { method: 'POST', body: { current_password: current.control.value, new_password: next.control.value } });
      current.control.value = '';
      next.control.value = '';
      let msg = 'Your password is changed.';
      if (r && r.sign_ins_ended > 0) msg += ' You were signed out on your other devices and browsers.';
      if (r && r.calendar_feed_revoked) msg += ' Your calendar feed link was switched off, since anyone who knew your old password may have copied it: make a new one on the Appointments page and add it to your calendar app again.';
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'wrong_password') {
        current.setError('That is not your current password.');
        current.control.focus();
      } else if (err instanceof ApiError && err.errors.length) {
        const f = err.fieldErrors();
        if (f.current_password) current.setError(f.current_password);
        if (f.new_password) next.setError(asSentence(f.new_password));
        (f.new_password ? next : current).control.focus();
      } else {
        status.replaceChildren(notice('error', describeError(err)));
      }
    } finally {
      setBusy(save, false);
    }
  });
  const card = h('section', { class: 'card section-gap', 'aria-labelledby': 'password-title' },
    h('h2', { id: 'password-title' }, 'Password'), form);
  return card;
}

/** "weak password: a password must…" -> "A password must….". */
function asSentence(message) {
  const m = message.replace(/^weak password:\s*/i, '').replace(/^./, (c) => c.toUpperCase());
  return /[.!?]$/.test(m) ? m : `${m}.`;
}
