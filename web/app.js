// Alcove web client: boot, hash router, navigation, automatic sign-out.
//
// Plain ES modules, no build step. Routes are hash routes (#/therapists/…) because the
// server serves files by path and has no fallback to index.html for other paths. Each page
// is a module under pages/ exporting `render(ctx)`, loaded on first use; it may return a
// cleanup function that runs when the route changes.

import { h, replace, focusHeading, announce } from './lib/dom.js';
import { onServiceTrouble } from './lib/http.js';
import { currentUser, onAuthChange, logout, setIdleLimit } from './lib/auth.js';
import { loadConfig, getConfig } from './lib/config.js';
import { api } from './lib/api.js';
import { t, language, setLanguage, onLanguageChange, LANGUAGES } from './lib/i18n.js';
import { startIdleWatch } from './lib/idle.js';
import { onSessionsChange, allSessions, activeCall, callInProgress, closeAllSessions } from './call/session.js';
import { discardPreparedStream } from './call/media.js';

const ROUTES = [
  { path: '/signin', page: 'signin', title: 'route.signin', access: 'guest' },
  { path: '/register', page: 'register', title: 'route.register', access: 'guest' },
  { path: '/therapists', page: 'therapists', title: 'route.therapists', access: 'public' },
  { path: '/therapists/:id', page: 'profile', title: 'route.profile', access: 'public' },
  { path: '/appointments', page: 'appointments', title: 'route.appointments', access: 'user' },
  // The link in emails and calendar files: the list, with that appointment marked.
  { path: '/appointments/:id', page: 'appointments', title: 'route.appointments', access: 'user' },
  { path: '/dashboard', page: 'dashboard', title: 'route.dashboard', access: 'therapist' },
  { path: '/settings', page: 'settings', title: 'route.settings', access: 'user' },
  { path: '/precall/:id', page: 'precall', title: 'route.precall', access: 'user' },
  { path: '/call/:id', page: 'call', title: 'route.call', access: 'user', layout: 'call' },
  { path: '/summary/:id', page: 'summary', title: 'route.summary', access: 'user' },
];

const main = document.getElementById('main');
let cleanup = null;
let renderSeq = 0;

/** Parse "#/therapists/abc?x=1" into {path, query}. */
export function currentRoute() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs = ''] = raw.split('?');
  return { path: path || '/', query: new URLSearchParams(qs) };
}

function match(path) {
  for (const r of ROUTES) {
    const names = [];
    const re = new RegExp(`^${r.path.replace(/:(\w+)/g, (_, n) => { names.push(n); return '([^/]+)'; })}/?$`);
    const m = re.exec(path);
    if (m) {
      const params = {};
      names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { route: r, params };
    }
  }
  return null;
}

export function navigate(hashPath, { replace: rep = false } = {}) {
  const target = `#${hashPath}`;
  if (location.hash === target) {
    render();
  } else if (rep) {
    history.replaceState(null, '', target);
    render();
  } else {
    location.hash = target;
  }
}

/** Where someone lands after signing in, or on "#/". */
export function homeFor(user) {
  if (!user) return '/therapists';
  if (user.role === 'therapist') return '/dashboard';
  if (user.role === 'admin') return '/therapists';
  return '/appointments';
}

async function render() {
  const seq = ++renderSeq;
  const { path, query } = currentRoute();
  const user = currentUser();

  if (path === '/') {
    navigate(homeFor(user), { replace: true });
    return;
  }
  const found = match(path);

  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
    cleanup = null;
  }
  document.body.dataset.layout = found && found.route.layout ? found.route.layout : 'page';

  if (!found) {
    document.title = `${t('route.not_found')} · Alcove`;
    replace(main, h('section', { class: 'page narrow' },
      h('h1', {}, t('app.not_found_title')),
      h('p', {}, t('app.not_found_text'), ' ', h('a', { href: '#/' }, t('app.not_found_link')))));
    focusHeading(main);
    renderNav();
    return;
  }
  const { route, params } = found;
  // The pre-call page hands its open camera to the call page only: anywhere else, let go.
  if (route.page !== 'call') discardPreparedStream();
  if (route.access !== 'public' && route.access !== 'guest' && !user) {
    navigate(`/signin?next=${encodeURIComponent(path)}`, { replace: true });
    return;
  }
  if (route.access === 'guest' && user) {
    navigate(query.get('next') || homeFor(user), { replace: true });
    return;
  }
  if (route.access === 'therapist' && user.role !== 'therapist') {
    navigate(homeFor(user), { replace: true });
    return;
  }

  renderNav();
  document.title = `${t(route.title)} · Alcove`;
  const container = h('div', { class: `route route-${route.page}` });
  replace(main, container);
  let mod;
  try {
    mod = await import(`./pages/${route.page}.js`);
  } catch (err) {
    console.error(err);
    replace(container, h('section', { class: 'page narrow' }, h('h1', {}, t('app.load_failed_title')), h('p', {}, t('app.load_failed_text'))));
    return;
  }
  if (seq !== renderSeq) return;
  const ctx = {
    root: container,
    params,
    query,
    user,
    config: getConfig(),
    navigate,
    alive: () => seq === renderSeq,
    setTitle: (t) => { document.title = `${t} · Alcove`; },
  };
  try {
    const result = await mod.render(ctx);
    if (seq !== renderSeq) {
      if (typeof result === 'function') result();
      return;
    }
    cleanup = typeof result === 'function' ? result : null;
  } catch (err) {
    console.error(err);
    if (seq === renderSeq) {
      replace(container, h('section', { class: 'page narrow' }, h('h1', {}, t('app.crashed_title')), h('p', {}, t('app.crashed_text'))));
    }
  }
  if (seq === renderSeq && !ctx.keepFocus) focusHeading(container);
  updateBanner();
}

// ---- navigation bar ---------------------------------------------------------------------

function renderNav() {
  const nav = document.getElementById('nav');
  const user = currentUser();
  const { path } = currentRoute();
  const link = (href, text) => {
    const active = path === href || (href !== '/' && path.startsWith(`${href}/`));
    return h('li', {}, h('a', { href: `#${href}`, 'aria-current': active ? 'page' : null }, text));
  };
  const items = [];
  if (!user) {
    items.push(link('/therapists', t('nav.find')), link('/signin', t('nav.signin')));
    if (getConfig().registration_open) items.push(link('/register', t('nav.register')));
  } else {
    if (user.role === 'therapist') items.push(link('/dashboard', t('nav.dashboard')));
    if (user.role !== 'therapist') items.push(link('/therapists', t('nav.find')));
    items.push(link('/appointments', user.role === 'client' ? t('nav.my_appointments') : t('nav.appointments')));
    items.push(link('/settings', t('nav.settings')));
    items.push(h('li', {}, h('button', { type: 'button', class: 'link-button', id: 'signout-button', onclick: () => signOut() }, t('nav.signout'))));
  }
  replace(nav, h('ul', {}, items));
  if (user) document.body.dataset.signedIn = user.role;
  else delete document.body.dataset.signedIn;
}

async function signOut(reason = null) {
  closeAllSessions();
  await logout(reason);
  navigate('/signin');
}

// ---- banner: the service away --------------------------------------------------------------

function watchServiceTrouble() {
  const el = h('div', { id: 'service-banner', class: 'global-banner service-banner', role: 'alert', hidden: true },
    t('banner.service_away'));
  onLanguageChange(() => { el.textContent = t('banner.service_away'); });
  document.body.prepend(el);
  onServiceTrouble((on) => {
    el.hidden = !on;
    if (!on) announce(t('banner.service_back'));
  });
}

// ---- banner: back to the call / someone is waiting ---------------------------------------

function updateBanner() {
  const banner = document.getElementById('global-banner');
  const { path } = currentRoute();
  const call = activeCall();
  const user = currentUser();
  let content = null;
  if (call && path !== `/call/${call.appointmentId}`) {
    content = [h('span', {}, t('banner.in_session')), ' ',
      h('a', { href: `#/call/${call.appointmentId}`, class: 'button small primary' }, t('banner.return'))];
  } else if (user && user.role === 'therapist' && !path.startsWith('/call/') && path !== '/dashboard') {
    const waiting = allSessions().flatMap((s) => (s.live ? s.lobby : []));
    if (waiting.length) {
      const names = waiting.map((w) => w.display_name).join(', ');
      content = [h('span', {}, t('banner.waiting', { count: waiting.length, names })), ' ',
        h('a', { href: '#/dashboard', class: 'button small primary' }, t('banner.open_dashboard'))];
    }
  }
  if (content) {
    replace(banner, ...content);
    banner.hidden = false;
  } else {
    banner.hidden = true;
    replace(banner);
  }
}

// ---- boot -----------------------------------------------------------------------------------

// ---- languages ------------------------------------------------------------------------------

/** The texts of index.html, in the current language. */
function applyShell() {
  document.getElementById('skip-link').textContent = t('shell.skip');
  document.querySelector('.brand').setAttribute('aria-label', t('shell.home'));
  document.getElementById('nav').setAttribute('aria-label', t('shell.main_nav'));
  document.getElementById('footer-text').textContent = t('shell.footer');
  const loading = document.querySelector('#main .loading');
  if (loading) loading.textContent = t('shell.loading');
  const label = document.getElementById('language-label');
  if (label) label.textContent = t('shell.language');
}

/** The language picker in the header, on every page. */
function languagePicker() {
  // Each language is named in itself, whatever the page's language.
  const select = h('select', { id: 'language-select', translate: 'no' },
    LANGUAGES.map((l) => h('option', { value: l.code, lang: l.code }, l.name)));
  select.value = language();
  select.addEventListener('change', () => chooseLanguage(select.value));
  onLanguageChange((code) => { select.value = code; });
  return h('div', { class: 'language-picker' },
    h('label', { for: 'language-select', id: 'language-label' }, t('shell.language')), select);
}

/** The person chose a language: everything redraws in it, and a signed-in account keeps it. */
async function chooseLanguage(code) {
  setLanguage(code);
  if (currentUser()) {
    try {
      await api('/me/settings', { method: 'PATCH', body: { language: code } });
    } catch { /* kept in this browser; the account gets it at the next change */ }
  }
}

async function boot() {
  document.querySelector('.header-inner').append(languagePicker());
  applyShell();
  onLanguageChange(() => {
    applyShell();
    renderNav();
    updateBanner();
    // The page is drawn again in the new words; a live call carries on underneath (its page
    // attaches to the session, as when coming back to it from another page).
    render();
  });
  watchServiceTrouble();
  await loadConfig();
  const config = getConfig();
  setIdleLimit(config.idle_sign_out_seconds);

  document.getElementById('skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    main.focus();
  });

  onAuthChange((user) => {
    renderNav();
    if (user) syncAccount(user);
    if (!user) {
      // Refresh refused (signed out elsewhere, or the sign-in expired).
      closeAllSessions();
      const { path } = currentRoute();
      const m = match(path);
      if (m && m.route.access !== 'public' && m.route.access !== 'guest') navigate('/signin');
    }
  });

  let lastLobbySize = 0;
  onSessionsChange(({ session, type }) => {
    if (type === 'lobby' || type === 'phase' || type === 'closed' || type === 'media') updateBanner();
    if (type === 'lobby') {
      const size = session.lobby.length;
      if (size > lastLobbySize) announce(t('banner.someone_waiting', { name: session.lobby[session.lobby.length - 1].display_name }));
      lastLobbySize = size;
    }
  });

  if (currentUser()) syncAccount(currentUser());

  startIdleWatch({
    seconds: config.idle_sign_out_seconds,
    isActive: () => !!currentUser(),
    isExempt: () => callInProgress(),
    onTimeout: () => {
      const minutes = Math.round(config.idle_sign_out_seconds / 60);
      signOut(t('idle.signed_out', { count: minutes }));
    },
  });

  window.addEventListener('hashchange', render);
  render();
}


// Once per sign-in: the account's language is used here (it was chosen before, maybe
// elsewhere); an account without one keeps this browser's. Likewise the time zone of the
// person's emails: the first time they are signed in here without one, this browser's is
// kept (they can change both in Settings).
let accountChecked = null;
async function syncAccount(user) {
  if (accountChecked === user.id) return;
  accountChecked = user.id;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  try {
    const s = await api('/me/settings');
    const patch = {};
    if (!s.time_zone && zone) patch.time_zone = zone;
    if (s.language && s.language !== language()) setLanguage(s.language);
    else if (!s.language) patch.language = language();
    if (Object.keys(patch).length) await api('/me/settings', { method: 'PATCH', body: patch });
  } catch {
    accountChecked = null; // tried again at the next sign-in change
  }
}

boot();
