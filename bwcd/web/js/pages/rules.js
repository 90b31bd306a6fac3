// Rules: each rule's trigger, criteria (as they read in a rule file),
// action, and a switch to enable or disable it (PUT /v1/rules/<id>).

import {call} from '../api.js';
import {h, note, replace} from '../dom.js';
import {criteriaLines, json, triggerText} from '../format.js';

function ruleRow(rule, onToggle) {
  const toggle = h('button', {
    type: 'button',
    class: `toggle ${rule.enabled ? 'on' : 'off'}`,
    'aria-pressed': rule.enabled ? 'true' : 'false',
    'aria-label': `${rule.enabled ? 'Disable' : 'Enable'} ${rule.ref}`,
    onclick: () => onToggle(rule, toggle),
  }, rule.enabled ? 'Enabled' : 'Disabled');
  const lines = criteriaLines(rule.criteria);
  const params = rule.action && rule.action.parameters && Object.keys(rule.action.parameters).length ? rule.action.parameters : null;
  return h('tr', {dataset: {ref: rule.ref}},
    h('td', {'data-label': 'Rule'}, h('strong', {}, rule.ref), rule.description ? h('div', {class: 'muted'}, rule.description) : null),
    h('td', {'data-label': 'Trigger'}, triggerText(rule.trigger)),
    h('td', {'data-label': 'Criteria'}, lines.length ? h('ul', {class: 'plain criteria'}, lines.map((l) => h('li', {}, h('code', {}, l)))) : h('span', {class: 'muted'}, 'always')),
    h('td', {'data-label': 'Action'}, h('code', {}, (rule.action && rule.action.ref) || '-'), params ? h('pre', {class: 'small'}, json(params)) : null),
    h('td', {'data-label': 'Enabled'}, toggle));
}

export function render(main) {
  const tbody = h('tbody', {id: 'rule-rows'});
  const status = h('div', {id: 'rules-status', 'aria-live': 'polite'});
  replace(main, h('h1', {}, 'Rules'), status,
    h('div', {class: 'scroll'}, h('table', {class: 'grid responsive', id: 'rules'},
      h('thead', {}, h('tr', {}, ['Rule', 'Trigger', 'Criteria', 'Action', 'Enabled'].map((c) => h('th', {scope: 'col'}, c)))),
      tbody)));

  const toggle = async (rule, button) => {
    button.disabled = true;
    const wanted = !rule.enabled;
    try {
      const {data} = await call('PUT', `/rules/${encodeURIComponent(rule.id)}`, {...rule, enabled: wanted});
      const row = ruleRow(data, toggle);
      button.closest('tr').replaceWith(row);
      row.querySelector('button.toggle').focus();
      replace(status, note(`${data.ref} is now ${data.enabled ? 'enabled' : 'disabled'}.`, 'ok'));
    } catch (e) {
      button.disabled = false;
      replace(status, note(`Could not change ${rule.ref}: ${e.message}`, 'error'));
    }
  };

  (async () => {
    try {
      const {data} = await call('GET', '/rules');
      replace(tbody, data.map((rule) => ruleRow(rule, toggle)));
      if (!data.length) replace(status, note('No rules yet.'));
    } catch (e) {
      replace(status, note(`Could not load rules: ${e.message}`, 'error'));
    }
  })();
  return null;
}
