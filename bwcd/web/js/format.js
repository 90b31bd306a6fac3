// How values are shown: times, durations, statuses, criteria and any JSON.
import {h} from './dom.js';

export const COMPLETED = ['succeeded', 'failed', 'timeout', 'canceled', 'abandoned'];
export const CANCELABLE = ['requested', 'scheduled', 'delayed', 'running', 'pausing', 'paused', 'resuming'];
export const STATUSES = ['requested', 'delayed', 'scheduled', 'running', 'succeeded', 'failed', 'timeout', 'canceling', 'canceled', 'abandoned'];

/**
 * Whether execution `a` is at least as recent as `b`: its status log (which
 * only grows) is as long.  A list read that was answered before a streamed
 * update must not undo it.
 */
export function notOlder(a, b) {
  return !b || ((a && a.log) || []).length >= ((b && b.log) || []).length;
}

const pad = (n) => String(n).padStart(2, '0');

/** A timestamp in the browser's time zone: 2026-12-03 14:05:09. */
export function time(value) {
  if (!value) return '-';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Seconds between two timestamps, readably: 0.4 s, 3 min 2 s. */
export function duration(start, end) {
  if (!start) return '-';
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function statusBadge(status) {
  return h('span', {class: `status status-${status || 'unknown'}`}, status || 'unknown');
}

/** JSON as indented text (for <pre>). */
export function json(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

/** A pattern or value the way it reads in a rule file. */
function literal(value) {
  return typeof value === 'string' ? `"${value}"` : JSON.stringify(value);
}

/** A rule's criteria as lines: "trigger.body.key1 equals "value1"". */
export function criteriaLines(criteria) {
  const lines = [];
  for (const [key, test] of Object.entries(criteria || {})) {
    if (test && typeof test === 'object') {
      const pattern = 'pattern' in test ? ` ${literal(test.pattern)}` : '';
      lines.push(`${key} ${test.type || 'equals'}${pattern}`);
    } else {
      lines.push(`${key} ${literal(test)}`);
    }
  }
  return lines;
}

/** A rule's trigger: its type, and parameters as key=value. */
export function triggerText(trigger) {
  if (!trigger) return '-';
  const params = Object.entries(trigger.parameters || {}).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return params.length ? `${trigger.type} (${params.join(', ')})` : (trigger.type || trigger.ref || '-');
}

/**
 * Any JSON value as nested elements: a list of objects is a table with a
 * column per key, an object a definition list, anything else its text.
 * Used for answers whose shape this page does not know in advance.
 */
export function renderValue(value, depth = 0) {
  if (value === null || value === undefined) return h('span', {class: 'muted'}, 'null');
  if (depth > 6) return h('pre', {}, json(value));
  if (Array.isArray(value)) {
    if (!value.length) return h('span', {class: 'muted'}, '(none)');
    if (value.every((v) => v && typeof v === 'object' && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return h('div', {class: 'scroll'}, h('table', {class: 'grid generic'},
        h('thead', {}, h('tr', {}, keys.map((k) => h('th', {scope: 'col'}, k)))),
        h('tbody', {}, value.map((row) => h('tr', {}, keys.map((k) => h('td', {'data-label': k}, renderValue(row[k], depth + 1))))))));
    }
    return h('ul', {class: 'plain'}, value.map((v) => h('li', {}, renderValue(v, depth + 1))));
  }
  if (typeof value === 'object') {
    const entries = Object.entries(value);
    if (!entries.length) return h('span', {class: 'muted'}, '{}');
    return h('dl', {class: 'kv'}, entries.map(([k, v]) => [h('dt', {}, k), h('dd', {}, renderValue(v, depth + 1))]));
  }
  if (typeof value === 'boolean') return h('span', {class: value ? 'yes' : 'no'}, String(value));
  return h('span', {}, String(value));
}
