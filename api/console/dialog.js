// Modal dialogs: focus moves into the dialog and stays there (Tab and
// Shift+Tab wrap), Escape closes it, and focus goes back to what had it.

import { h } from './dom.js';

function focusable(root) {
  return [...root.querySelectorAll('button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])')]
    .filter((el) => !el.disabled && !el.hidden);
}

/**
 * Opens a dialog; `build(close)` returns its body. Resolves with what
 * `close(value)` was given (undefined for Escape or Cancel).
 */
export function modal(title, build) {
  return new Promise((resolve) => {
    const before = document.activeElement;
    const heading = h('h2', { id: 'dialog-title', text: title });
    const box = h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'dialog-title' });
    const backdrop = h('div', { class: 'backdrop' }, box);
    let done = false;
    const close = (value) => {
      if (done) return;
      done = true;
      backdrop.remove();
      document.removeEventListener('keydown', onKey, true);
      if (before && before.focus) before.focus();
      resolve(value);
    };
    const onKey = (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        close(undefined);
      } else if (e.key === 'Tab') {
        const items = focusable(box);
        if (!items.length) return;
        const first = items[0], last = items[items.length - 1];
        if (e.shiftKey && (document.activeElement === first || !box.contains(document.activeElement))) {
          last.focus();
          e.preventDefault();
        } else if (!e.shiftKey && (document.activeElement === last || !box.contains(document.activeElement))) {
          first.focus();
          e.preventDefault();
        }
      }
    };
    box.append(heading, build(close));
    document.body.append(backdrop);
    document.addEventListener('keydown', onKey, true);
    const first = box.querySelector('[data-autofocus]') || focusable(box)[0];
    if (first) first.focus();
  });
}

/** Asks to confirm an action; resolves true when confirmed. */
export function confirm(title, message, { action = 'Confirm', danger = false } = {}) {
  return modal(title, (close) => h('div', {},
    h('p', { text: message }),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'ghost', onclick: () => close(false), text: 'Cancel' }),
      h('button', {
        type: 'button', class: danger ? 'danger' : 'primary', 'data-autofocus': true,
        onclick: () => close(true), text: action,
      })),
  )).then((v) => v === true);
}
