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
import { startIdleWatch } from './lib/idle.js';
import { onSessionsChange, allSessions, activeCall, callInProgress, closeAllSessions } from './call/session.js';
import { discardPreparedStream } from './call/media.js';

const ROUTES = [
  { path: '/signin', page: 'signin', title: 'Sign in', access: 'guest' },
  { path: '/register', page: 'register', title: 'Create an account', access: 'guest' },
  { path: '/therapists', page: 'therapists', title: 'Find a therapist', access: 'public' },
  { path: '/therapists/:id', page: 'profile', title: 'Therapist', access: 'public' },
  { path: '/appointments', page: 'appointments', title: 'My appointments', access: 'user' },
  // The link in emails and calendar files: the list, with that appointment marked.
  { path: '/appointments/:id', page: 'appointments', title: 'My appointments', access: 'user' },
  { path: '/dashboard', page: 'dashboard', title: 'Dashboard', access: 'therapist' },
  { path: '/settings', page: 'settings', title: 'Settings', access: 'user' },
  { path: '/precall/:id', page: 'precall', title: 'Check your camera and microphone', access: 'user' },
  { path: '/call/:id', page: 'call', title: 'Session', access: 'user', layout: 'call' },
  { path: '/summary/:id', page: 'summary', title: 'After your session', access: 'user' },
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
    document.title = 'Page not found · Alcove';
    replace(main, h('section', { class: 'page narrow' },
      h('h1', {}, 'We could not find that page'),
      h('p', {}, 'The link may be old. ', h('a', { href: '#/' }, 'Go to the start page'), '.')));
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
  document.title = `${route.title} · Alcove`;
  const container = h('div', { class: `route route-${route.page}` });
  replace(main, container);
  let mod;
  try {
    mod = await import(`./pages/${route.page}.js`);
  } catch (err) {
    console.error(err);
    replace(container, h('section', { class: 'page narrow' }, h('h1', {}, 'This page did not load'), h('p', {}, 'Please check your connection and reload the page.')));
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
      replace(container, h('section', { class: 'page narrow' }, h('h1', {}, 'Something went wrong'), h('p', {}, 'Please reload the page. If it keeps happening, contact the practice.')));
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
    items.push(link('/therapists', 'Find a therapist'), link('/signin', 'Sign in'));
    if (getConfig().registration_open) items.push(link('/register', 'Create account'));
  } else {
    if (user.role === 'therapist') items.push(link('/dashboard', 'Dashboard'));
    if (user.role !== 'therapist') items.push(link('/therapists', 'Find a therapist'));
    items.push(link('/appointments', user.role === 'client' ? 'My appointments' : 'Appointments'));
    items.push(link('/settings', 'Settings'));
    items.push(h('li', {}, h('button', { type: 'button', class: 'link-button', id: 'signout-button', onclick: () => signOut() }, 'Sign out')));
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
    'We can\u2019t reach the service right now. Retrying\u2026 You do not need to do anything.');
  document.body.prepend(el);
  onServiceTrouble((on) => {
    el.hidden = !on;
    if (!on) announce('The service is back.');
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
    content = [h('span', {}, 'You are in a session.'), ' ',
      h('a', { href: `#/call/${call.appointmentId}`, class: 'button small primary' }, 'Return to the session')];
  } else if (user && user.role === 'therapist' && !path.startsWith('/call/') && path !== '/dashboard') {
    const waiting = allSessions().flatMap((s) => (s.live ? s.lobby : []));
    if (waiting.length) {
      const names = waiting.map((w) => w.display_name).join(', ');
      content = [h('span', {}, `${names} ${waiting.length === 1 ? 'is' : 'are'} in the waiting room.`), ' ',
        h('a', { href: '#/dashboard', class: 'button small primary' }, 'Open the dashboard')];
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

async function boot() {
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
    if (user) syncTimeZone(user);
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
      if (size > lastLobbySize) announce(`${session.lobby[session.lobby.length - 1].display_name} is in the waiting room.`);
      lastLobbySize = size;
    }
  });

  if (currentUser()) syncTimeZone(currentUser());

  startIdleWatch({
    seconds: config.idle_sign_out_seconds,
    isActive: () => !!currentUser(),
    isExempt: () => callInProgress(),
    onTimeout: () => {
      const minutes = Math.round(config.idle_sign_out_seconds / 60);
      signOut(`For your privacy, you were signed out after ${minutes === 1 ? 'a minute' : `${minutes} minutes`} without activity.`);
    },
  });

  window.addEventListener('hashchange', render);
  render();
}


// The times in a person's emails are in their time zone: the first time they are signed
// in here without one, this browser's is kept (they can change it in Settings).
let timeZoneChecked = null;
async function syncTimeZone(user) {
  if (timeZoneChecked === user.id) return;
  timeZoneChecked = user.id;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone) return;
  try {
    const s = await api('/me/settings');
    if (!s.time_zone) await api('/me/settings', { method: 'PATCH', body: { time_zone: zone } });
  } catch {
    timeZoneChecked = null; // tried again at the next sign-in change
  }
}

boot();
