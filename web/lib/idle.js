// Automatic sign-out after a stretch without activity (idle_sign_out_seconds), to protect
// people who leave a shared computer. Never during a call or in the waiting room. A minute
// before, a notice offers to stay signed in.

import { t } from './i18n.js';
import { h, replace } from './dom.js';

const ACTIVITY = ['pointerdown', 'keydown', 'wheel', 'touchstart', 'scroll', 'mousemove'];
const WARN_BEFORE_MS = 60_000;

export function startIdleWatch({ seconds, isExempt, isActive, onTimeout }) {
  if (!seconds || seconds <= 0) return () => {};
  const limit = seconds * 1000;
  let last = Date.now();
  let lastMove = 0;
  const box = document.getElementById('idle-warning');

  const bump = (ev) => {
    // Mouse moves are frequent: count them at most once a second.
    if (ev && ev.type === 'mousemove') {
      const now = Date.now();
      if (now - lastMove < 1000) return;
      lastMove = now;
    }
    last = Date.now();
    if (box && !box.hidden) box.hidden = true;
  };
  ACTIVITY.forEach((t) => window.addEventListener(t, bump, { passive: true, capture: true }));

  const timer = setInterval(() => {
    if (!isActive()) {
      last = Date.now();
      return;
    }
    if (isExempt()) {
      last = Date.now();
      if (box) box.hidden = true;
      return;
    }
    const idle = Date.now() - last;
    const warnAt = limit - Math.min(WARN_BEFORE_MS, limit / 4);
    if (idle >= limit) {
      if (box) box.hidden = true;
      onTimeout();
      last = Date.now();
    } else if (idle >= warnAt && box && !box.hidden) {
      const text = box.querySelector('#idle-warning-text');
      if (text) text.textContent = t('idle.warning', { count: Math.max(1, Math.round((limit - idle) / 1000)) });
    } else if (idle >= warnAt && box && box.hidden) {
      const stay = h('button', { type: 'button', class: 'button primary', onclick: () => bump() }, t('idle.stay'));
      replace(box,
        h('p', { id: 'idle-warning-text' }, t('idle.warning', { count: Math.round((limit - idle) / 1000) })),
        stay);
      box.hidden = false;
      stay.focus();
    }
  }, 5000);

  return () => {
    clearInterval(timer);
    ACTIVITY.forEach((t) => window.removeEventListener(t, bump, { capture: true }));
  };
}
