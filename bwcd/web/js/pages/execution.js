// One execution (#/history/<id>/general): what ran, with which parameters,
// its status log, result and output, kept live; re-run and cancel.

import {call, get} from '../api.js';
import {h, note, replace} from '../dom.js';
import {CANCELABLE, COMPLETED, duration, json, notOlder, statusBadge, time} from '../format.js';
import {follow} from '../live.js';

function detail(label, value) {
  return [h('dt', {}, label), h('dd', {}, value === undefined || value === null || value === '' ? '-' : value)];
}

export function render(main, {id}) {
  const path = `/executions/${encodeURIComponent(id)}`;
  const status = h('div', {id: 'execution-status', 'aria-live': 'polite'});
  const head = h('div', {class: 'exec-head'});
  const details = h('dl', {class: 'kv', id: 'execution-details'});
  const parameters = h('pre', {id: 'parameters', tabindex: 0});
  const stdout = h('pre', {id: 'stdout', class: 'output', tabindex: 0, 'aria-label': 'stdout'});
  const stderr = h('pre', {id: 'stderr', class: 'output', tabindex: 0, 'aria-label': 'stderr'});
  const result = h('pre', {id: 'result', tabindex: 0});
  const log = h('ol', {id: 'status-log', class: 'log'});
  const rerun = h('button', {type: 'button', id: 'rerun', class: 'primary', onclick: () => act('rerun')}, 'Re-run');
  const cancel = h('button', {type: 'button', id: 'cancel', class: 'danger', onclick: () => act('cancel')}, 'Cancel');

  replace(main,
    h('p', {}, h('a', {href: '#/history'}, '← History')),
    head,
    h('div', {class: 'actions'}, rerun, cancel),
    status,
    h('div', {class: 'columns'},
      h('section', {'aria-labelledby': 'h-details'}, h('h2', {id: 'h-details'}, 'Details'), details,
        h('h2', {id: 'h-params'}, 'Parameters'), parameters,
        h('h2', {id: 'h-log'}, 'Status log'), log),
      h('section', {'aria-labelledby': 'h-output'}, h('h2', {id: 'h-output'}, 'Output'),
        h('h3', {}, 'stdout'), stdout, h('h3', {}, 'stderr'), stderr,
        h('h2', {id: 'h-result'}, 'Result'), result)));

  let doc = null;

  const show = () => {
    const ref = (doc.action && doc.action.ref) || '?';
    replace(head, h('h1', {}, ref, ' ', statusBadge(doc.status)));
    document.title = `${ref} ${doc.status} · bwcd`;
    const ctx = doc.context || {};
    const trigger = doc.trigger || {};
    const instance = doc.trigger_instance && doc.trigger_instance.id;
    const rerunOf = (ctx['re-run'] || ctx.re_run || {}).ref;
    replace(details,
      detail('Execution', h('code', {}, doc.id)),
      detail('Status', doc.status),
      detail('User', ctx.user),
      detail('Started', time(doc.start_timestamp)),
      detail('Ended', doc.end_timestamp ? time(doc.end_timestamp) : null),
      detail('Duration', duration(doc.start_timestamp, doc.end_timestamp)),
      detail('Rule', doc.rule && doc.rule.ref),
      detail('Trigger', trigger.ref || trigger.name),
      detail('Trigger instance', instance ? h('a', {href: `#/events?instance=${encodeURIComponent(instance)}`}, instance) : null),
      detail('Re-run of', rerunOf ? h('a', {href: `#/history/${encodeURIComponent(rerunOf)}/general`}, rerunOf) : null));
    replace(parameters, json(doc.parameters || {}));
    replace(result, doc.result === undefined ? '(no result yet)' : json(doc.result));
    replace(log, (doc.log || []).map((entry) => h('li', {}, statusBadge(entry.status), ' ', h('time', {datetime: entry.timestamp}, time(entry.timestamp)))));
    cancel.disabled = !CANCELABLE.includes(doc.status);
  };

  // Output is read whole again whenever it may have grown: one request in
  // flight at a time, and one more if something arrived meanwhile.
  let reading = false;
  let again = false;
  const readOutput = async () => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        const [out, err] = await Promise.all([
          get(`${path}/output?output_type=stdout`, {raw: true}),
          get(`${path}/output?output_type=stderr`, {raw: true}),
        ]);
        replace(stdout, out || '');
        replace(stderr, err || '');
        stdout.classList.toggle('empty', !out);
        stderr.classList.toggle('empty', !err);
      } while (again);
    } finally {
      reading = false;
    }
  };

  const load = async () => {
    try {
      const read = await get(path);
      if (notOlder(read, doc)) {
        doc = read;
        show();
      }
      await readOutput();
      replace(status);
    } catch (e) {
      replace(status, note(e.status === 404 ? `There is no execution ${id}.` : `Could not load the execution: ${e.message}`, 'error'));
    }
  };

  let finished = false;
  const refresh = async () => {
    // polling: only while it may still change (once more after it ends)
    if (finished) return;
    if (doc && COMPLETED.includes(doc.status)) finished = true;
    await load();
  };

  async function act(what) {
    rerun.disabled = true;
    cancel.disabled = true;
    try {
      if (what === 'rerun') {
        const {data} = await call('POST', `${path}/re_run`, {});
        location.hash = `#/history/${encodeURIComponent(data.id)}/general`;
        return;
      }
      const {data} = await call('DELETE', path);
      if (data && data.faultstring) replace(status, note(data.faultstring, 'error'));
      else replace(status, note('Cancel requested.', 'ok'));
      finished = false;
      await load();
    } catch (e) {
      replace(status, note(e.message, 'error'));
    } finally {
      rerun.disabled = false;
      if (doc) cancel.disabled = !CANCELABLE.includes(doc.status);
    }
  }

  load();
  return follow(['st2.execution__update', 'st2.execution.output__create'], (name, data) => {
    if (!data) return;
    if (name === 'st2.execution__update' && data.id === id) {
      if (!notOlder(data, doc)) return;
      doc = data;
      show();
      readOutput().catch(() => {});
    } else if (name === 'st2.execution.output__create' && data.execution_id === id) {
      readOutput().catch(() => {});
    }
  }, refresh);
}
