// Tiny DOM helpers. Everything is built with createElement and textContent: user-supplied
// text (names, bios, chat) never goes through innerHTML, and the strict CSP forbids inline
// styles and handlers anyway.

/**
 * Create an element.
 *   h('button', {class: 'primary', type: 'button', onclick: fn, 'aria-label': 'Mute'}, 'Mute')
 * Attribute rules: `class`/`className` set the class; `dataset` takes an object; keys starting
 * with `on` add event listeners; `true` sets a boolean attribute, `false`/`null`/`undefined`
 * leave it out; `value`, `checked`, `selected`, `disabled`, `hidden` and `srcObject` are set as
 * properties. Children may be strings, numbers, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, val] of Object.entries(attrs || {})) {
    if (val === undefined || val === null || val === false) {
      if (key === 'value' || key === 'checked') el[key] = key === 'value' ? '' : false;
      continue;
    }
    if (key === 'class' || key === 'className') el.className = val;
    else if (key === 'dataset') Object.assign(el.dataset, val);
    else if (key.startsWith('on') && typeof val === 'function') el.addEventListener(key.slice(2), val);
    else if (['value', 'checked', 'selected', 'disabled', 'hidden', 'srcObject', 'muted', 'indeterminate'].includes(key)) el[key] = val;
    else if (val === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(val));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

let seq = 0;
/** A unique id for label/aria wiring. */
export function uid(prefix = 'id') {
  seq += 1;
  return `${prefix}-${seq}`;
}

/** Say something to screen-reader users through the page's polite live region. */
export function announce(message) {
  const region = document.getElementById('sr-status');
  if (!region) return;
  // Clearing first makes the same message be read again.
  region.textContent = '';
  setTimeout(() => { region.textContent = message; }, 50);
}

/**
 * A labelled form field: label, control, optional hint and an error slot, with
 * aria-describedby wired up. Returns {wrap, control, setError(message|null)}.
 */
export function field(labelText, control, { hint, id } = {}) {
  const controlId = id || control.id || uid('field');
  control.id = controlId;
  const errorId = `${controlId}-error`;
  const hintId = `${controlId}-hint`;
  const describedBy = [];
  const hintEl = hint ? h('p', { class: 'hint', id: hintId }, hint) : null;
  if (hintEl) describedBy.push(hintId);
  const errorEl = h('p', { class: 'field-error', id: errorId, hidden: true });
  describedBy.push(errorId);
  control.setAttribute('aria-describedby', describedBy.join(' '));
  const label = h('label', { for: controlId }, labelText);
  const wrap = h('div', { class: 'field' }, label, hintEl, control, errorEl);
  return {
    wrap,
    control,
    label,
    hintEl,
    setError(message) {
      if (message) {
        errorEl.textContent = message;
        errorEl.hidden = false;
        control.setAttribute('aria-invalid', 'true');
      } else {
        errorEl.textContent = '';
        errorEl.hidden = true;
        control.removeAttribute('aria-invalid');
      }
    },
  };
}

/** A status/alert box. kind: info | success | warning | error */
export function notice(kind, ...children) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

/** Build a `<select>` from [{value, label}] with an optional empty first option. */
export function select(options, { id, value, empty, name } = {}) {
  const el = h('select', { id, name });
  if (empty !== undefined) el.append(h('option', { value: '' }, empty));
  for (const o of options) el.append(h('option', { value: o.value }, o.label));
  if (value !== undefined && value !== null) el.value = value;
  return el;
}

/** Move keyboard focus to a page's main heading so screen readers announce the new page. */
export function focusHeading(root) {
  const heading = root.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: false });
  }
}

export function setBusy(button, busy, busyText) {
  if (busy) {
    button.dataset.label = button.textContent;
    if (busyText) button.textContent = busyText;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  } else {
    if (button.dataset.label) button.textContent = button.dataset.label;
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}
