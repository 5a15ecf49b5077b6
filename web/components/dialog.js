// A modal dialog on the native <dialog> element: focus is trapped by the browser, Escape
// closes it, and focus goes back to whatever opened it.

import { h } from '../lib/dom.js';

export function openDialog({ title, content = [], id }) {
  const opener = document.activeElement;
  const titleId = `${id || 'dialog'}-title`;
  const dialog = h('dialog', { id, 'aria-labelledby': titleId },
    h('h2', { id: titleId }, title),
    ...content);
  document.body.append(dialog);
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && document.contains(opener)) opener.focus();
  });
  dialog.showModal();
  return {
    dialog,
    close() {
      if (dialog.open) dialog.close();
    },
  };
}
