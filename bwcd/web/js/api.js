// The API as this page talks to it: where it is (asked of the server, which
// knows whether nginx is in front), the signed-in credentials (kept in
// sessionStorage, so they end with the browser tab), and which optional
// routes this daemon has (read from its own OpenAPI description, so that
// the page never requests a route that is not there).

const STORAGE_KEY = 'bwcd.credentials';

let layout = {api: '/v1', auth: '/auth/v1/tokens', stream: '/v1/stream'};
let routes = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export async function loadLayout() {
  const response = await fetch('/webui/config.json', {cache: 'no-store'});
  if (response.ok) layout = await response.json();
  return layout;
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY));
  } catch (e) {
    return null;
  }
}

function remember(value) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(value));
  routes = null;
}

export function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
  routes = null;
}

function authHeaders() {
  const c = credentials();
  if (!c) return {};
  return c.kind === 'token' ? {'X-Auth-Token': c.value} : {'St2-Api-Key': c.value};
}

/**
 * Call the API: {data, total} (data parsed as JSON unless `raw`).
 * A 401 signs out: the token expired or the key was revoked.
 */
export async function call(method, path, body, {raw = false} = {}) {
  const headers = {...authHeaders(), Accept: raw ? 'text/plain, application/json' : 'application/json'};
  const init = {method, headers, cache: 'no-store'};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(layout.api + path, init);
  } catch (e) {
    throw new ApiError(0, 'bwcd cannot be reached', null);
  }
  const text = await response.text();
  let data = text;
  if (!raw || !response.ok) {
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = text;
    }
  }
  if (response.status === 401 && credentials()) {
    signOut();
    onSignedOut('Your session has ended; sign in again.');
  }
  if (!response.ok) {
    const message = (data && data.faultstring) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, data);
  }
  const total = response.headers.get('X-Total-Count');
  return {data, total: total === null ? null : Number(total)};
}

export const get = (path, options) => call('GET', path, undefined, options).then((r) => r.data);

/** Sign in with a username and password: a token from /auth/v1/tokens. */
export async function signInWithPassword(user, password) {
  const basic = btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));
  const response = await fetch(layout.auth, {
    method: 'POST',
    headers: {Authorization: `Basic ${basic}`, 'Content-Type': 'application/json', Accept: 'application/json'},
    body: '{}',
    cache: 'no-store',
  });
  const data = await response.json().catch(() => null);
  if (!response.ok || !data || !data.token) {
    throw new ApiError(response.status, (data && data.faultstring) || 'Sign-in failed', data);
  }
  remember({kind: 'token', value: data.token, user: data.user || user, expiry: data.expiry});
}

/** Sign in with an API key, checked by one request before it is kept. */
export async function signInWithKey(key) {
  remember({kind: 'apikey', value: key, user: 'API key'});
  try {
    await call('GET', '/executions?limit=1&exclude_attributes=result');
  } catch (e) {
    signOut();
    throw e.status === 401 ? new ApiError(401, 'This API key is not valid', null) : e;
  }
}

/** Whether this daemon has `path` (as /v1/... in its OpenAPI description). */
export async function hasRoute(path) {
  if (routes === null) {
    try {
      const description = await (await fetch(`${layout.api}/openapi.json`, {cache: 'no-store'})).json();
      routes = new Set(Object.keys(description.paths || {}));
    } catch (e) {
      routes = new Set();
    }
  }
  return routes.has(path);
}

/** The event stream's URL with the credentials EventSource cannot send as headers. */
export function streamURL(events) {
  const c = credentials() || {};
  const params = new URLSearchParams();
  if (events) params.set('events', events.join(','));
  if (c.kind === 'token') params.set('x-auth-token', c.value);
  else if (c.kind === 'apikey') params.set('st2-api-key', c.value);
  return `${layout.stream}?${params}`;
}

export function webhookURL(url) {
  return `${location.origin}${layout.api}/webhooks/${url}`;
}
