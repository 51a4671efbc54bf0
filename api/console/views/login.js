// Sign-in with an admin's email and password, and the change a temporary
// password asks for before anything else.

import { changePassword, current, login } from '../api.js';
import { h } from '../dom.js';

function field(label, attrs) {
  const input = h('input', attrs);
  return { input, row: h('label', { class: 'field' }, h('span', { text: label }), input) };
}

function errorLine() {
  return h('p', { class: 'form-error', role: 'alert', hidden: true });
}

function showError(el, err) {
  el.textContent = err.message || String(err);
  el.hidden = false;
}

function signInForm(root) {
  const email = field('Email', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = field('Password', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = errorLine();
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', text: 'Operations console' }),
    h('p', { class: 'muted', text: 'Sign in with your administrator account.' }),
    email.row, password.row, error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const s = await login(email.input.value.trim(), password.input.value);
      if (s.must_change_password) {
        root.replaceChildren(changeForm(password.input.value));
        root.querySelector('input').focus();
      }
    } catch (err) {
      showError(error, err);
      password.input.select();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function changeForm(temporary) {
  const s = current();
  const old = field('Temporary password', { type: 'password', name: 'current', autocomplete: 'current-password', required: true });
  if (temporary) old.input.value = temporary;
  const next = field('New password', {
    type: 'password', name: 'new', autocomplete: 'new-password', required: true, minlength: 12, maxlength: 128,
    'aria-describedby': 'pw-rules',
  });
  const again = field('New password again', { type: 'password', name: 'again', autocomplete: 'new-password', required: true });
  const error = errorLine();
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Change password and continue' });
  const form = h('form', { class: 'card login', 'aria-labelledby': 'change-title' },
    h('h1', { id: 'change-title', text: 'Choose a new password' }),
    h('p', { class: 'muted', text: `${s ? s.email : 'Your account'} signed in with a temporary password; choose your own to continue.` }),
    old.row, next.row,
    h('p', { id: 'pw-rules', class: 'hint', text: '12 to 128 characters, with a lower-case letter, an upper-case letter and a digit.' }),
    again.row, error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (next.input.value !== again.input.value) {
      showError(error, new Error('The two new passwords differ.'));
      again.input.select();
      return;
    }
    submit.disabled = true;
    try {
      await changePassword(old.input.value, next.input.value);
    } catch (err) {
      showError(error, err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Mounts the sign-in (or password change) into `root`. */
export function mount(root, { session }) {
  const box = h('div', { class: 'login-wrap' });
  box.append(session && session.must_change_password ? changeForm('') : signInForm(box));
  root.append(box);
  const first = box.querySelector('input:not([value])') || box.querySelector('input');
  if (first) first.focus();
}
