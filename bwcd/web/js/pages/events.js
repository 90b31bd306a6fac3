// Events: trigger instances (per hook, newest first), what each one's rules
// did with it (the enforcements) and, on demand, why: the daemon's own
// explanation from POST /v1/rules/explain, shown whatever its shape.

import {call, get, hasRoute} from '../api.js';
import {h, note, replace} from '../dom.js';
import {json, renderValue, statusBadge, time} from '../format.js';
import {follow} from '../live.js';

const LIMIT = 30;

function enforcementRow(e) {
  const execution = e.execution_id;
  return h('tr', {},
    h('td', {'data-label': 'Rule'}, (e.rule && (e.rule.ref || e.rule.id)) || '-'),
    h('td', {'data-label': 'Execution'}, execution ? h('a', {href: `#/history/${encodeURIComponent(execution)}/general`}, execution) : '-'),
    h('td', {'data-label': 'Enforced'}, time(e.enforced_at)),
    h('td', {'data-label': 'Failure'}, e.failure_reason || '-'));
}

/** One rule's verdict: fires or not, why, and each criterion. */
function ruleVerdict(rule) {
  const verdict = rule.fires ? 'fires' : rule.matched ? 'matches, does not fire' : 'does not match';
  const criteria = (rule.criteria || []).map((c) => ({
    key: c.key, 'value found': c.value, operator: c.operator, pattern: c.pattern, verdict: c.error ? `error: ${c.error}` : c.matched ? 'holds' : 'fails',
  }));
  return h('section', {class: `verdict ${rule.fires ? 'fires' : 'quiet'}`, dataset: {rule: rule.ref}},
    h('h4', {}, rule.ref || '(unsaved rule)', ' ', h('span', {class: `status ${rule.fires ? 'status-succeeded' : 'status-canceled'}`}, verdict)),
    rule.reason || rule.failure_reason ? h('p', {}, rule.reason || rule.failure_reason) : null,
    criteria.length ? renderValue(criteria) : note('No criteria: every event on the trigger matches.'),
    rule.parameters_error ? note(`Parameters: ${rule.parameters_error}`, 'error')
      : rule.parameters ? h('details', {}, h('summary', {}, `Parameters for ${rule.action || 'the action'}`), h('pre', {}, json(rule.parameters))) : null);
}

/** The explanation: per rule when it has that shape, else as it came. */
function explained(data) {
  if (!data || !Array.isArray(data.rules)) return renderValue(data);
  if (!data.rules.length) return note(`No rule listens on ${data.trigger || 'this trigger'}.`);
  return h('div', {}, data.payload_error ? note(data.payload_error, 'error') : null, data.rules.map(ruleVerdict));
}

function instanceItem(instance, canExplain, open, label) {
  const body = h('div', {class: 'instance-body'});
  const explanation = h('div', {class: 'explanation', 'aria-live': 'polite'});
  const statusCell = h('span', {class: 'instance-status'}, statusBadge(instance.status));
  let loaded = false;

  const loadEnforcements = async () => {
    loaded = true;
    replace(body, note('Loading…'));
    try {
      const enforcements = await get(`/ruleenforcements?trigger_instance=${encodeURIComponent(instance.id)}`);
      replace(body,
        h('h3', {}, 'Rules that fired'),
        enforcements.length
          ? h('div', {class: 'scroll'}, h('table', {class: 'grid responsive'},
            h('thead', {}, h('tr', {}, ['Rule', 'Execution', 'Enforced', 'Failure'].map((c) => h('th', {scope: 'col'}, c)))),
            h('tbody', {}, enforcements.map(enforcementRow))))
          : note('No rule fired for this event.'),
        canExplain
          ? h('button', {type: 'button', class: 'explain', onclick: explain}, 'Explain: why did (or didn\'t) each rule fire?')
          : note('This daemon has no POST /v1/rules/explain.'),
        explanation,
        h('h3', {}, 'Payload'), h('pre', {tabindex: 0}, json(instance.payload)));
    } catch (e) {
      replace(body, note(e.message, 'error'));
    }
  };

  async function explain() {
    replace(explanation, note('Asking the rules engine…'));
    try {
      const {data} = await call('POST', '/rules/explain', {trigger_instance: instance.id});
      replace(explanation, h('h3', {}, 'Explanation'), explained(data));
    } catch (e) {
      replace(explanation, note(e.message, 'error'));
    }
  }

  const details = h('details', {class: 'instance', dataset: {id: instance.id}, open: open, ontoggle: () => {
    if (details.open && !loaded) loadEnforcements();
  }},
  h('summary', {}, h('time', {datetime: instance.occurrence_time}, time(instance.occurrence_time)), ' ',
    h('strong', {}, label), ' ', statusCell, ' ', h('code', {class: 'muted'}, instance.id)),
  body);
  details.updateStatus = (newStatus) => {
    if (newStatus !== instance.status) {
      instance.status = newStatus;
      replace(statusCell, statusBadge(newStatus));
      if (loaded && details.open) loadEnforcements();
      else loaded = false;
    }
  };
  return details;
}

export function render(main, {query}) {
  const hook = query.get('trigger') || '';
  const wanted = query.get('instance');
  const list = h('div', {id: 'instances'});
  const status = h('div', {id: 'events-status'});
  const select = h('select', {name: 'trigger', id: 'events-trigger'}, h('option', {value: ''}, 'every trigger'));
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter events', onsubmit: (event) => {
    event.preventDefault();
    location.hash = select.value ? `#/events?trigger=${encodeURIComponent(select.value)}` : '#/events';
  }}, h('label', {for: 'events-trigger'}, 'Hook '), select, h('button', {type: 'submit'}, 'Show'));

  replace(main, h('h1', {}, 'Events'), form, status, list);

  const items = new Map();
  const hookNames = new Map();
  let canExplain = false;

  const load = async () => {
    const params = new URLSearchParams({limit: String(LIMIT)});
    if (hook) params.set('trigger', hook);
    try {
      const instances = wanted
        ? [await get(`/triggerinstances/${encodeURIComponent(wanted)}`)]
        : await get(`/triggerinstances?${params}`);
      const fresh = [];
      for (const instance of instances) {
        const known = items.get(instance.id);
        if (known) known.updateStatus(instance.status);
        else fresh.push(instance);
      }
      const made = fresh.map((instance) => {
        const item = instanceItem(instance, canExplain, instance.id === wanted, hookNames.get(instance.trigger) || instance.trigger);
        items.set(instance.id, item);
        return item;
      });
      list.prepend(...made);
      if (!items.size) replace(list, note(hook ? `No events for ${hook} yet.` : 'No events yet.'));
      else list.querySelectorAll(':scope > p').forEach((p) => p.remove());
      replace(status);
    } catch (e) {
      replace(status, note(`Could not load events: ${e.message}`, 'error'));
    }
  };

  (async () => {
    canExplain = await hasRoute('/v1/rules/explain');
    try {
      for (const t of await get('/webhooks')) {
        hookNames.set(t.ref, `webhook ${t.parameters && t.parameters.url}`);
        select.append(h('option', {value: t.ref, selected: t.ref === hook}, `${t.parameters && t.parameters.url} (${t.ref})`));
      }
    } catch (e) {
      replace(status, note(e.message, 'error'));
    }
    await load();
    const opened = wanted && items.get(wanted);
    if (opened) opened.dispatchEvent(new Event('toggle'));
  })();

  return follow(['st2.trigger_instance__create', 'st2.trigger_instance__update', 'st2.rule_enforcement__create'], () => load(), load);
}
