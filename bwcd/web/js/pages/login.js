// Signing in: a username and password (a token from /auth/v1/tokens) or an
// API key.

import {signInWithKey, signInWithPassword} from '../api.js';
import {h, note, replace} from '../dom.js';

export function render(main, {next, message}) {
  const status = h('div', {id: 'login-status', 'aria-live': 'polite'}, message ? note(message, 'error') : null);
  const busy = (form, on) => {
    for (const el of form.elements) el.disabled = on;
  };
  const done = () => {
    if (location.hash === `#${next}`) window.dispatchEvent(new HashChangeEvent('hashchange'));
    else location.hash = `#${next}`;
  };

  const passwordForm = h('form', {id: 'login-form', class: 'card', 'aria-labelledby': 'login-password-title', onsubmit: async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    busy(form, true);
    replace(status, note('Signing in…'));
    try {
      await signInWithPassword(form.elements.username.value, form.elements.password.value);
      done();
    } catch (e) {
      replace(status, note(e.status === 401 ? 'Wrong username or password.' : e.message, 'error'));
      busy(form, false);
      form.elements.password.focus();
    }
  }},
  h('h2', {id: 'login-password-title'}, 'Username and password'),
  h('label', {for: 'username'}, 'Username'),
  h('input', {id: 'username', name: 'username', autocomplete: 'username', required: true}),
  h('label', {for: 'password'}, 'Password'),
  h('input', {id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true}),
  h('button', {type: 'submit', class: 'primary'}, 'Sign in'));

  const keyForm = h('form', {id: 'apikey-form', class: 'card', 'aria-labelledby': 'login-key-title', onsubmit: async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    busy(form, true);
    replace(status, note('Checking the key…'));
    try {
      await signInWithKey(form.elements.apikey.value.trim());
      done();
    } catch (e) {
      replace(status, note(e.message, 'error'));
      busy(form, false);
    }
  }},
  h('h2', {id: 'login-key-title'}, 'API key'),
  h('label', {for: 'apikey'}, 'API key'),
  h('input', {id: 'apikey', name: 'apikey', type: 'password', autocomplete: 'off', required: true}),
  h('button', {type: 'submit'}, 'Use API key'));

  replace(main, h('h1', {}, 'Sign in to bwcd'), status, h('div', {class: 'login'}, passwordForm, keyForm));
  document.getElementById('username').focus();
  return null;
}
