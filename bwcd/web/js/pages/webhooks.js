// Webhooks: each registered hook's URL, the rules listening on it, how its
// deliveries are verified (GET /v1/webhookpolicies, when this daemon has
// it) and its last delivery.

import {get, hasRoute, webhookURL} from '../api.js';
import {h, note, replace} from '../dom.js';
import {renderValue, statusBadge, time} from '../format.js';

function policyFor(policies, hook) {
  if (!Array.isArray(policies)) return null;
  return policies.find((p) => p && [p.url, p.hook, p.webhook, p.name].includes(hook)) || null;
}

/** A policy in a few words: how deliveries are verified, deduplicated, limited. */
function verification(policy) {
  if (!policy) return '-';
  const lines = [];
  const v = policy.verify;
  if (v && typeof v === 'object') {
    const how = [v.algorithm, v.header && `header ${v.header}`].filter(Boolean).join(', ');
    lines.push(`signature: ${v.preset || 'hmac'}${how ? ` (${how})` : ''}`);
  }
  if (policy.dedup) lines.push(policy.dedup === true ? 'deduplicated' : `deduplicated by ${policy.dedup.header || policy.dedup.body || 'delivery id'}`);
  const rate = policy.limits && policy.limits.rate;
  if (rate) lines.push(`rate: ${rate.per_second}/s, burst ${rate.burst ?? '-'}`);
  if (!lines.length) {
    const shown = {...policy};
    for (const key of ['id', 'url', 'hook', 'webhook', 'name']) delete shown[key];
    return renderValue(shown);
  }
  return h('ul', {class: 'plain policy'}, lines.map((l) => h('li', {}, l)));
}

export function render(main) {
  const tbody = h('tbody', {id: 'webhook-rows'});
  const status = h('div', {id: 'webhooks-status'});
  replace(main, h('h1', {}, 'Webhooks'), status,
    h('div', {class: 'scroll'}, h('table', {class: 'grid responsive', id: 'webhooks'},
      h('thead', {}, h('tr', {}, ['URL', 'Rules', 'Verification', 'Last delivery'].map((c) => h('th', {scope: 'col'}, c)))),
      tbody)));

  (async () => {
    try {
      const [hooks, rules, policies] = await Promise.all([
        get('/webhooks'),
        get('/rules'),
        hasRoute('/v1/webhookpolicies').then((has) => (has ? get('/webhookpolicies').catch(() => null) : null)),
      ]);
      const rows = await Promise.all(hooks.map(async (hook) => {
        const url = (hook.parameters && hook.parameters.url) || '';
        const listening = rules.filter((r) => r.trigger && r.trigger.type === hook.type && (r.trigger.parameters || {}).url === url);
        const last = (await get(`/triggerinstances?trigger=${encodeURIComponent(hook.ref)}&limit=1`))[0];
        return h('tr', {dataset: {hook: url}},
          h('td', {'data-label': 'URL'}, h('code', {class: 'url'}, webhookURL(url)), h('div', {class: 'muted'}, hook.ref)),
          h('td', {'data-label': 'Rules'}, listening.length
            ? h('ul', {class: 'plain'}, listening.map((r) => h('li', {}, h('a', {href: '#/rules'}, r.ref), r.enabled ? '' : ' (disabled)')))
            : '-'),
          h('td', {'data-label': 'Verification'}, verification(policyFor(policies, url))),
          h('td', {'data-label': 'Last delivery'}, last
            ? h('a', {href: `#/events?instance=${encodeURIComponent(last.id)}`}, time(last.occurrence_time), ' ', statusBadge(last.status))
            : 'never'));
      }));
      replace(tbody, rows);
      if (!hooks.length) replace(status, note('No webhooks yet: a rule on core.st2.webhook registers one.'));
    } catch (e) {
      replace(status, note(`Could not load webhooks: ${e.message}`, 'error'));
    }
  })();
  return null;
}
