// Settings: email reminders and the time zone of emails, relay-only privacy mode, password.

import { h, field, notice, setBusy, announce } from '../lib/dom.js';
import { api, ApiError, describeError } from '../lib/api.js';
import { logout } from '../lib/auth.js';
import { leadText } from '../lib/format.js';
import { t } from '../lib/i18n.js';

export async function render(ctx) {
  const { root, config, user } = ctx;
  const page = h('section', { class: 'page narrow' },
    h('h1', {}, t('settings.title')),
    h('p', { class: 'muted' }, t('settings.signed_in_as', { name: user.display_name, email: user.email })));
  root.append(page);
  page.append(await emailCard(), await privacyCard(config), passwordCard(user), signOutEverywhereCard());
}

async function emailCard() {
  const status = h('div', { 'aria-live': 'polite', id: 'email-status' });
  const card = h('section', { class: 'card section-gap', 'aria-labelledby': 'email-title' },
    h('h2', { id: 'email-title' }, t('settings.email_title')));
  let s;
  try {
    s = await api('/me/settings');
  } catch (err) {
    card.append(notice('error', describeError(err)));
    return card;
  }
  if (!s.mail_enabled) {
    card.append(h('p', { id: 'email-off' }, t('settings.email_off')));
    return card;
  }
  const leads = s.reminder_lead_seconds.map(leadText);
  const joined = leads.reduce((acc, l) => (acc ? t('settings.and', { a: acc, b: l }) : l), '');
  card.append(h('p', {}, t('settings.email_intro')));
  const box = h('input', { type: 'checkbox', id: 'email-reminders' });
  box.checked = s.email_reminders;
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const current = s.time_zone || here || 'UTC';
  const options = [...new Set([current, ...zones])].sort();
  const zone = field(t('settings.time_zone'),
    h('select', { id: 'email-time-zone', translate: 'no' }, ...options.map((z) => h('option', { value: z }, z.replace(/_/g, ' ')))),
    { hint: here ? t('settings.time_zone_here', { zone: here.replace(/_/g, ' ') }) : undefined });
  zone.control.value = current;
  const save = h('button', { type: 'submit', class: 'button primary', id: 'email-save' }, t('settings.save'));
  const form = h('form', {},
    h('div', { class: 'check' }, box, h('label', { for: 'email-reminders' }, joined ? t('settings.reminders_when', { leads: joined }) : t('settings.reminders'))),
    zone.wrap, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    zone.setError(null);
    setBusy(save, true, t('settings.saving'));
    try {
      const res = await api('/me/settings', { method: 'PATCH', body: { email_reminders: box.checked, time_zone: zone.control.value } });
      box.checked = res.email_reminders;
      const msg = res.email_reminders ? t('settings.saved_on') : t('settings.saved_off');
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      if (err instanceof ApiError && err.fieldErrors().time_zone) zone.setError(t('settings.time_zone_bad'));
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
  const button = h('button', { type: 'button', class: 'button', id: 'sign-out-everywhere' }, t('settings.everywhere_button'));
  button.addEventListener('click', async () => {
    if (!window.confirm(t('settings.everywhere_confirm'))) return;
    setBusy(button, true, t('settings.everywhere_busy'));
    try {
      const r = await api('/me/sign-out-everywhere', { method: 'POST' });
      const n = r.sign_ins_ended;
      await logout(`${t('settings.everywhere_done', { count: n })}${r.calendar_feed_revoked ? ` ${t('settings.everywhere_feed')}` : ''}`);
    } catch (err) {
      status.replaceChildren(notice('error', describeError(err)));
      setBusy(button, false);
    }
  });
  return h('section', { class: 'card section-gap', 'aria-labelledby': 'everywhere-title' },
    h('h2', { id: 'everywhere-title' }, t('settings.everywhere_title')),
    h('p', {}, t('settings.everywhere_intro')),
    status, h('div', { class: 'actions' }, button));
}

async function privacyCard(config) {
  const status = h('div', { 'aria-live': 'polite' });
  const box = h('input', { type: 'checkbox', id: 'relay-only' });
  const save = h('button', { type: 'submit', class: 'button primary', id: 'privacy-save' }, t('settings.save'));
  const card = h('section', { class: 'card', 'aria-labelledby': 'privacy-title' },
    h('h2', { id: 'privacy-title' }, t('settings.privacy_title')),
    h('p', {}, t('settings.privacy_intro')));
  if (!config.relay_available) {
    box.disabled = true;
    save.disabled = true;
    card.append(notice('info', t('settings.relay_unavailable')));
  } else if (config.relay_enforced) {
    box.disabled = true;
    box.checked = true;
    save.disabled = true;
    card.append(notice('info', t('settings.relay_enforced')));
  }
  const effect = h('p', { id: 'privacy-effect', class: 'small' });
  const showEffect = (p) => {
    effect.dataset.effective = p.effective;
    effect.textContent = {
      relayed: t('settings.effect_relayed'),
      direct: t('settings.effect_direct'),
      refused: t('settings.effect_refused'),
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
    h('div', { class: 'check' }, box, h('label', { for: 'relay-only' }, t('settings.relay_label'))),
    effect, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setBusy(save, true, t('settings.saving'));
    try {
      const res = await api('/me/privacy', { method: 'PUT', body: { relay_only: box.checked } });
      box.checked = res.relay_only;
      showEffect(res);
      const msg = res.relay_only ? t('settings.relay_on') : t('settings.relay_off');
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      let msg = describeError(err);
      if (err instanceof ApiError && err.code === 'relay_unavailable') msg = t('settings.relay_unavailable');
      if (err instanceof ApiError && err.code === 'relay_enforced') msg = t('settings.relay_cannot_off');
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
  const current = field(t('settings.password_current'), h('input', { type: 'password', id: 'password-current', autocomplete: 'current-password' }));
  const next = field(t('settings.password_new'), h('input', { type: 'password', id: 'password-new', autocomplete: 'new-password', minlength: 10, maxlength: 128 }),
    { hint: t('settings.password_hint') });
  const hiddenUser = h('input', { type: 'email', autocomplete: 'username', value: user.email, hidden: true, readonly: true, tabindex: '-1', 'aria-hidden': 'true' });
  const save = h('button', { type: 'submit', class: 'button primary', id: 'password-save' }, t('settings.password_change'));
  const form = h('form', { novalidate: true }, hiddenUser, current.wrap, next.wrap, status, h('div', { class: 'actions' }, save));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    current.setError(null);
    next.setError(null);
    status.replaceChildren();
    if (!current.control.value) {
      current.setError(t('settings.password_need_current'));
      current.control.focus();
      return;
    }
    setBusy(save, true, t('settings.password_changing'));
    try {
      const r = await api('/me/password', { method: 'POST', body: { current_password: current.control.value, new_password: next.control.value } });
      current.control.value = '';
      next.control.value = '';
      let msg = t('settings.password_changed');
      if (r && r.sign_ins_ended > 0) msg += ` ${t('settings.password_others_out')}`;
      if (r && r.calendar_feed_revoked) msg += ` ${t('settings.password_feed_off')}`;
      status.replaceChildren(notice('success', msg));
      announce(msg);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'wrong_password') {
        current.setError(t('settings.password_wrong'));
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
    h('h2', { id: 'password-title' }, t('settings.password_title')), form);
  return card;
}

/** "weak password: a password must…" -> "A password must….". */
function asSentence(message) {
  const m = message.replace(/^weak password:\s*/i, '').replace(/^./, (c) => c.toUpperCase());
  return /[.!?]$/.test(m) ? m : `${m}.`;
}
