// History: the executions, newest first, kept live; filters by status,
// action, trigger and user.

import {call} from '../api.js';
import {h, note, replace} from '../dom.js';
import {duration, notOlder, STATUSES, statusBadge, time} from '../format.js';
import {follow} from '../live.js';

const LIMIT = 50;
const FILTERS = ['status', 'action', 'trigger', 'user'];

function triggerOf(doc) {
  const t = doc.trigger || {};
  const url = t.parameters && t.parameters.url;
  if (t.type === 'core.st2.webhook' && url) return `webhook ${url}`;
  return t.ref || t.name || '-';
}

function userOf(doc) {
  return (doc.context && doc.context.user) || '-';
}

function row(doc) {
  const ref = (doc.action && doc.action.ref) || '?';
  return h('tr', {dataset: {id: doc.id, status: doc.status}},
    h('td', {'data-label': 'Status'}, statusBadge(doc.status)),
    h('td', {'data-label': 'Action'}, h('a', {href: `#/history/${encodeURIComponent(doc.id)}/general`, class: 'exec-link'}, ref)),
    h('td', {'data-label': 'Trigger'}, triggerOf(doc)),
    h('td', {'data-label': 'User'}, userOf(doc)),
    h('td', {'data-label': 'Started'}, h('time', {datetime: doc.start_timestamp}, time(doc.start_timestamp))),
    h('td', {'data-label': 'Duration'}, duration(doc.start_timestamp, doc.end_timestamp)));
}

/** Whether an execution pushed by the stream belongs in the filtered list. */
function matches(doc, filters) {
  const fields = {status: doc.status, action: doc.action && doc.action.ref, trigger: doc.trigger && doc.trigger.name, user: userOf(doc)};
  return FILTERS.every((f) => !filters[f] || fields[f] === filters[f]);
}

export function render(main, {query}) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || '']));
  const tbody = h('tbody', {id: 'history-rows'});
  const count = h('p', {class: 'muted', id: 'history-count', 'aria-live': 'polite'});
  const status = h('div', {id: 'history-status'});

  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter executions', onsubmit: (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const f of FILTERS) {
      const value = form.elements[f].value.trim();
      if (value) params.set(f, value);
    }
    const text = params.toString();
    location.hash = `#/history${text ? `?${text}` : ''}`;
  }},
  h('label', {}, 'Status ', h('select', {name: 'status'}, h('option', {value: ''}, 'any'),
    STATUSES.map((s) => h('option', {value: s, selected: filters.status === s}, s)))),
  h('label', {}, 'Action ', h('input', {name: 'action', value: filters.action, placeholder: 'core.local', size: 14})),
  h('label', {}, 'Trigger ', h('input', {name: 'trigger', value: filters.trigger, placeholder: 'trigger name', size: 14})),
  h('label', {}, 'User ', h('input', {name: 'user', value: filters.user, size: 10})),
  h('button', {type: 'submit'}, 'Filter'),
  h('a', {href: '#/history', class: 'button'}, 'Clear'));

  replace(main,
    h('h1', {}, 'History'),
    form,
    status,
    h('div', {class: 'scroll'}, h('table', {class: 'grid responsive', id: 'history'},
      h('caption', {class: 'sr-only'}, 'Executions, newest first'),
      h('thead', {}, h('tr', {}, ['Status', 'Action', 'Trigger', 'User', 'Started', 'Duration'].map((c) => h('th', {scope: 'col'}, c)))),
      tbody)),
    count);

  let docs = [];
  let total = 0;
  const show = () => {
    replace(tbody, docs.map(row));
    replace(count, docs.length ? `${docs.length} of ${total} executions` : 'No executions yet.');
  };

  const load = async () => {
    const params = new URLSearchParams({limit: String(LIMIT), exclude_attributes: 'result'});
    for (const f of FILTERS) if (filters[f]) params.set(f, filters[f]);
    try {
      const answer = await call('GET', `/executions?${params}`);
      const known = new Map(docs.map((d) => [d.id, d]));
      docs = (answer.data || []).map((d) => (notOlder(d, known.get(d.id)) ? d : known.get(d.id)));
      total = answer.total ?? docs.length;
      replace(status);
      show();
    } catch (e) {
      replace(status, note(`Could not load executions: ${e.message}`, 'error'));
    }
  };

  load();
  return follow(['st2.execution__create', 'st2.execution__update'], (name, doc) => {
    if (!doc || !doc.id) return;
    const at = docs.findIndex((d) => d.id === doc.id);
    if (!matches(doc, filters)) {
      if (at >= 0) docs.splice(at, 1);
    } else if (at >= 0) {
      if (notOlder(doc, docs[at])) docs[at] = doc;
    } else {
      docs.unshift(doc);
      total += 1;
      docs = docs.slice(0, LIMIT);
    }
    show();
  }, load);
}
