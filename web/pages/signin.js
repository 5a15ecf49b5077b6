// Sign in.

import { h, field, notice, setBusy, announce } from '../lib/dom.js';
import { login, takeSignOutReason } from '../lib/auth.js';
import { ApiError, describeError } from '../lib/api.js';
import { t } from '../lib/i18n.js';

export function render(ctx) {
  const { root, query, config } = ctx;
  const reason = takeSignOutReason();
  const status = h('div', { 'aria-live': 'polite' });
  if (reason) status.append(notice('info', reason));
  if (query.get('registered')) status.append(notice('info', t('signin.registered')));

  const email = field(t('signin.email'), h('input', { type: 'email', id: 'signin-email', name: 'email', autocomplete: 'username', required: true }));
  const password = field(t('signin.password'), h('input', { type: 'password', id: 'signin-password', name: 'password', autocomplete: 'current-password', required: true }));
  const submit = h('button', { type: 'submit', class: 'button primary', id: 'signin-submit' }, t('signin.submit'));
  if (query.get('email')) email.control.value = query.get('email');

  const form = h('form', { novalidate: true, 'aria-labelledby': 'signin-title' }, email.wrap, password.wrap, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    email.setError(null);
    password.setError(null);
    if (!email.control.value.trim()) {
      email.setError(t('signin.need_email'));
      email.control.focus();
      return;
    }
    if (!password.control.value) {
      password.setError(t('signin.need_password'));
      password.control.focus();
      return;
    }
    setBusy(submit, true, t('signin.busy'));
    try {
      const user = await login(email.control.value.trim(), password.control.value);
      announce(t('signin.done', { name: user.display_name }));
      const next = query.get('next');
      const home = user.role === 'therapist' ? '/dashboard' : user.role === 'admin' ? '/therapists' : '/appointments';
      ctx.navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : home, { replace: true });
    } catch (err) {
      setBusy(submit, false);
      let msg = describeError(err);
      if (err instanceof ApiError) {
        if (err.code === 'invalid_credentials') msg = t('signin.wrong');
        else if (err.code === 'account_disabled') msg = t('signin.disabled');
        else if (err.code === 'too_many_requests') {
          const secs = err.retryAfter ? Number(err.retryAfter) : null;
          const mins = secs ? Math.ceil(secs / 60) : null;
          if (secs && secs < 60) msg = t('signin.wait_seconds', { count: secs });
          else if (mins) msg = t('signin.wait_minutes', { count: mins });
          else msg = t('signin.wait');
        } else if (err.code === 'server_busy') {
          msg = t('error.busy');
        } else if (err.code === 'validation_failed') {
          const f = err.fieldErrors();
          if (f.email) email.setError(f.email);
          if (f.password) password.setError(f.password);
        }
      }
      status.replaceChildren(notice('error', msg));
      password.control.select();
    }
  });

  root.append(h('section', { class: 'page narrow' },
    h('h1', { id: 'signin-title' }, t('signin.title')),
    h('p', { class: 'lead' }, t('signin.lead')),
    status,
    h('div', { class: 'card' }, form),
    config.registration_open
      ? h('p', { class: 'actions' }, t('signin.new_here'), ' ', h('a', { href: '#/register' }, t('signin.create')))
      : null));
}
