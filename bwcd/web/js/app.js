// The page's entry point: hash routes in st2web's format (#/history,
// #/history/<id>/general, ...), the header, and signing in and out.

import {credentials, loadLayout, signOut, whenSignedOut} from './api.js';
import {h, replace} from './dom.js';
import {showModeWith} from './live.js';
import * as events from './pages/events.js';
import * as execution from './pages/execution.js';
import * as history from './pages/history.js';
import * as login from './pages/login.js';
import * as rules from './pages/rules.js';
import * as webhooks from './pages/webhooks.js';

const ROUTES = [
  [/^\/history\/([^/]+)(?:\/general)?$/, 'history', execution],
  [/^\/history$/, 'history', history],
  [/^\/events$/, 'events', events],
  [/^\/rules$/, 'rules', rules],
  [/^\/webhooks$/, 'webhooks', webhooks],
];

const main = document.getElementById('main');
let cleanup = null;
let loginMessage = '';

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/history';
  const [path, queryText] = raw.split('?');
  return {path: path.replace(/\/+$/, '') || '/history', query: new URLSearchParams(queryText || '')};
}

function showSession() {
  const c = credentials();
  document.getElementById('nav').hidden = !c;
  document.getElementById('session').hidden = !c;
  replace(document.getElementById('who'), c ? c.user || '' : '');
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  showSession();
  const {path, query} = parseHash();
  if (!credentials()) {
    const message = loginMessage;
    loginMessage = '';
    cleanup = login.render(main, {next: path === '/login' ? '/history' : path, message});
    return;
  }
  if (path === '/login') {
    location.hash = '#/history';
    return;
  }
  const found = ROUTES.map(([pattern, nav, page]) => [pattern.exec(path), nav, page]).find(([m]) => m);
  for (const link of document.querySelectorAll('#nav a')) {
    if (found && link.dataset.page === found[1]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!found) {
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', {href: '#/history'}, 'Go to History')));
    return;
  }
  const [match, , page] = found;
  cleanup = page.render(main, {id: match[1] ? decodeURIComponent(match[1]) : null, query}) || null;
}

function focusMain() {
  // after a page change, keyboard and screen reader users start at the content
  if (document.activeElement === document.body || !main.contains(document.activeElement)) main.focus({preventScroll: true});
}

async function start() {
  await loadLayout();
  showModeWith((mode) => {
    const live = document.getElementById('live');
    live.dataset.mode = mode;
    replace(live, mode === 'stream' ? 'live: stream' : 'live: polling every 2 s');
  });
  whenSignedOut((message) => {
    loginMessage = message;
    route();
  });
  document.getElementById('logout').addEventListener('click', () => {
    signOut();
    if (location.hash === '#/login') route();
    else location.hash = '#/login';
  });
  window.addEventListener('hashchange', () => {
    route().then(focusMain);
  });
  await route();
}

start();
