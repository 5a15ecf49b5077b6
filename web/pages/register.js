// Register a client account. The password rule comes from the server: when it refuses a
// password (422 validation_failed), its message for the field is shown next to the field.

import { h, field, notice, setBusy } from '../lib/dom.js';
import { register, login } from '../lib/auth.js';
import { ApiError, describeError } from '../lib/api.js';
import { t } from '../lib/i18n.js';

export function render(ctx) {
  const { root, config } = ctx;
  if (!config.registration_open) {
    root.append(h('section', { class: 'page narrow' },
      h('h1', {}, t('register.title')),
      notice('info', t('register.closed')),
      h('p', {}, h('a', { href: '#/signin' }, t('register.signin')))));
    return;
  }
  const status = h('div', { 'aria-live': 'polite' });
  const name = field(t('register.name'), h('input', { type: 'text', id: 'register-name', autocomplete: 'name', required: true, maxlength: 100 }),
    { hint: t('register.name_hint') });
  const email = field(t('register.email'), h('input', { type: 'email', id: 'register-email', autocomplete: 'email', required: true }));
  const password = field(t('register.password'), h('input', { type: 'password', id: 'register-password', autocomplete: 'new-password', required: true, minlength: 10, maxlength: 128 }),
    { hint: t('register.password_hint') });
  const submit = h('button', { type: 'submit', class: 'button primary', id: 'register-submit' }, t('register.submit'));
  const fields = { display_name: name, email, password };

  const form = h('form', { novalidate: true }, name.wrap, email.wrap, password.wrap, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    Object.values(fields).forEach((f) => f.setError(null));
    setBusy(submit, true, t('register.busy'));
    const mail = email.control.value.trim();
    try {
      await register(name.control.value.trim(), mail, password.control.value);
    } catch (err) {
      setBusy(submit, false);
      if (err instanceof ApiError && err.code === 'validation_failed' && err.errors.length) {
        const byField = err.fieldErrors();
        let first = null;
        for (const [key, f] of Object.entries(fields)) {
          if (byField[key]) {
            f.setError(sentence(key, byField[key]));
            first = first || f;
          }
        }
        status.replaceChildren(notice('error', t('register.check_fields')));
        if (first) first.control.focus();
      } else if (err instanceof ApiError && err.code === 'registration_closed') {
        status.replaceChildren(notice('error', t('register.closed')));
      } else if (err instanceof ApiError && err.code === 'too_many_requests') {
        status.replaceChildren(notice('error', t('register.too_many')));
      } else if (err instanceof ApiError && err.code === 'server_busy') {
        status.replaceChildren(notice('error', t('error.busy')));
      } else {
        status.replaceChildren(notice('error', describeError(err)));
      }
      return;
    }
    // Registered: sign straight in.
    try {
      await login(mail, password.control.value);
      ctx.navigate('/therapists', { replace: true });
    } catch {
      ctx.navigate(`/signin?registered=1&email=${encodeURIComponent(mail)}`, { replace: true });
    }
  });

  root.append(h('section', { class: 'page narrow' },
    h('h1', {}, t('register.title')),
    h('p', { class: 'lead' }, t('register.lead')),
    status,
    h('div', { class: 'card' }, form),
    h('p', { class: 'actions' }, t('register.have_account'), ' ', h('a', { href: '#/signin' }, t('register.signin')))));
}

/** The server's message, made to read as a sentence ("weak password: a password must…"). */
function sentence(fieldName, message) {
  let m = message.replace(/^weak password:\s*/i, '');
  m = m.replace(/^display_name\b/, t('register.name'));
  m = m.charAt(0).toUpperCase() + m.slice(1);
  return /[.!?]$/.test(m) ? m : `${m}.`;
}
