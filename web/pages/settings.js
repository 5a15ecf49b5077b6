// Settings: relay-only privacy mode and password.

import { h, field, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError } from '../lib/api.js';

export async function render(ctx) {
  const { root, config, user } = ctx;
  const page = h('section', { class: 'page narrow' },
    h('h1', {}, 'Settings'),
    h('p', { class: 'muted' }, `Signed in as ${user.display_name} (${user.email}).`));
  root.append(page);
  page.append(await privacyCard(config), passwordCard(user));
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
  try {
    const p = await api('/me/privacy');
    box.checked = p.relay_only || config.relay_enforced;
  } catch (err) {
    status.append(notice('error', describeError(err)));
  }
  const form = h('form', {},
    h('div', { class: 'check' }, box, h('label', { for: 'relay-only' }, 'Relay-only calls (hide my internet address)')),
    status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setBusy(save, true, 'Saving…');
    try {
      const res = await api('/me/privacy', { method: 'PUT', body: { relay_only: box.checked } });
      box.checked = res.relay_only;
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
      if (!config.relay_available || config.relay_enforced) save.disabled = true;
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
      await api('/me/password', { method: 'POST', body: { current_password: current.control.value, new_password: next.control.value } });
      current.control.value = '';
      next.control.value = '';
      status.replaceChildren(notice('success', 'Your password is changed.'));
      announce('Your password is changed.');
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
