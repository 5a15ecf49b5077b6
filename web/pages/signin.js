// Sign in.

import { h, field, notice, setBusy, announce } from '../lib/dom.js';
import { login, takeSignOutReason } from '../lib/auth.js';
import { ApiError, describeError } from '../lib/api.js';

export function render(ctx) {
  const { root, query, config } = ctx;
  const reason = takeSignOutReason();
  const status = h('div', { 'aria-live': 'polite' });
  if (reason) status.append(notice('info', reason));
  if (query.get('registered')) status.append(notice('info', 'Please sign in. If this email address already had an account, sign in with that account\'s password.'));

  const email = field('Email address', h('input', { type: 'email', id: 'signin-email', name: 'email', autocomplete: 'username', required: true }));
  const password = field('Password', h('input', { type: 'password', id: 'signin-password', name: 'password', autocomplete: 'current-password', required: true }));
  const submit = h('button', { type: 'submit', class: 'button primary', id: 'signin-submit' }, 'Sign in');
  if (query.get('email')) email.control.value = query.get('email');

  const form = h('form', { novalidate: true, 'aria-labelledby': 'signin-title' }, email.wrap, password.wrap, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    email.setError(null);
    password.setError(null);
    if (!email.control.value.trim()) {
      email.setError('Please enter your email address.');
      email.control.focus();
      return;
    }
    if (!password.control.value) {
      password.setError('Please enter your password.');
      password.control.focus();
      return;
    }
    setBusy(submit, true, 'Signing in…');
    try {
      const user = await login(email.control.value.trim(), password.control.value);
      announce(`Signed in as ${user.display_name}.`);
      const next = query.get('next');
      const home = user.role === 'therapist' ? '/dashboard' : user.role === 'admin' ? '/therapists' : '/appointments';
      ctx.navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : home, { replace: true });
    } catch (err) {
      setBusy(submit, false);
      let msg = describeError(err);
      if (err instanceof ApiError) {
        if (err.code === 'invalid_credentials') msg = 'That email address and password do not match an account. Please check them and try again.';
        else if (err.code === 'account_disabled') msg = 'This account has been switched off. Please contact the practice.';
        else if (err.code === 'too_many_requests') {
          const secs = err.retryAfter ? Number(err.retryAfter) : null;
          const mins = secs ? Math.ceil(secs / 60) : null;
          const wait = secs && secs < 60 ? ` ${secs} second${secs === 1 ? '' : 's'}` : mins ? ` about ${mins} minute${mins === 1 ? '' : 's'}` : ' a while';
          msg = `Too many attempts. Please wait${wait} and try again.`;
        } else if (err.code === 'server_busy') {
          msg = 'The service is very busy right now. Please try again in a moment.';
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
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', { class: 'lead' }, 'Welcome back. Sign in to see your appointments and join your sessions.'),
    status,
    h('div', { class: 'card' }, form),
    config.registration_open
      ? h('p', { class: 'actions' }, 'New here? ', h('a', { href: '#/register' }, 'Create an account'))
      : null));
}
