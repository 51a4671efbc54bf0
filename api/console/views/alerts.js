// Alerts: statistics (unresolved by severity, opened over 7 days, mean
// times to acknowledge and resolve), the alerts filtered by status and
// severity, acknowledging and resolving one (after a confirmation), an
// alert's history (#/alerts/<id>), and the alert rules with their enabled
// state.

import { call, query } from '../api.js';
import { h, num, ms, badge, errorBox, empty, time, when, replace } from '../dom.js';
import { stackedBar, legend } from '../charts.js';
import { confirm } from '../dialog.js';

export const SEVERITY = { critical: ['Critical', 'bad'], warning: ['Warning', 'warn'], info: ['Info', 'neutral'] };
const STATUS = { open: ['Open', 'bad'], acknowledged: ['Acknowledged', 'warn'], resolved: ['Resolved', 'ok'] };
const STATUSES = [['unresolved', 'Open or acknowledged'], ['open', 'Open'], ['acknowledged', 'Acknowledged'], ['resolved', 'Resolved'], ['any', 'Any']];
const SEVERITIES = ['critical', 'warning', 'info'];

function severityBadge(sev) {
  const [label, tone] = SEVERITY[sev] || [sev, 'neutral'];
  return badge(label, tone);
}

function statusBadge(status) {
  const [label, tone] = STATUS[status] || [status, 'neutral'];
  return badge(label, tone);
}

function stat(label, value, field) {
  return h('div', { class: 'stat' }, h('dt', { text: label }), h('dd', { 'data-field': field, text: value }));
}

/** 300 → "5 min", 3600 → "1 h", 90 → "90 s". */
function span(secs) {
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0) return `${secs / 60} min`;
  return `${secs} s`;
}

function seconds(v) {
  return v === null || v === undefined ? '—' : ms(v * 1000);
}

/** Acknowledges or resolves `alert` after a confirmation; the changed
 * alert, or null when cancelled or refused (a toast says why). */
async function act(alert, action, toast) {
  const ack = action === 'acknowledge';
  const ok = await confirm(`${ack ? 'Acknowledge' : 'Resolve'} this alert?`,
    ack ? `${alert.summary}. Acknowledging stops its escalation; PagerDuty, Slack and webhooks hear of it.`
      : `${alert.summary}. Resolving tells every target it reached; if the condition still holds, a new alert opens after the rule's cooldown.`,
    { action: ack ? 'Acknowledge' : 'Resolve' });
  if (!ok) return null;
  try {
    const changed = await call(`/api/v1/admin/alerts/${encodeURIComponent(alert.id)}/${action}`, { method: 'POST' });
    toast(`Alert ${ack ? 'acknowledged' : 'resolved'}`);
    return changed;
  } catch (err) {
    toast(`Could not ${action} the alert: ${err.message}`, 'bad');
    return null;
  }
}

function actions(alert, run) {
  return [
    alert.status === 'open' ? h('button', {
      type: 'button', class: 'primary', 'data-action': 'acknowledge', onclick: () => run(alert, 'acknowledge'),
      text: 'Acknowledge', 'aria-label': `Acknowledge: ${alert.summary}`,
    }) : null,
    alert.status !== 'resolved' ? h('button', {
      type: 'button', 'data-action': 'resolve', onclick: () => run(alert, 'resolve'),
      text: 'Resolve', 'aria-label': `Resolve: ${alert.summary}`,
    }) : null,
  ];
}

/** Mounts the alerts page, or one alert's page for `match[1]`. */
export function mount(root, ctx) {
  if (ctx.match[1]) return mountOne(root, ctx);
  const { toast } = ctx;
  const filters = { status: ctx.params.get('status') || 'unresolved', severity: ctx.params.get('severity') || '' };
  const stats = h('section', { class: 'card', 'aria-labelledby': 'stats-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  const form = h('form', { class: 'filters card', 'aria-label': 'Filters' });
  const list = h('section', { class: 'card', 'aria-labelledby': 'alerts-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  const rules = h('section', { class: 'card', 'aria-labelledby': 'rules-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Alerts' })), stats, form, list, rules);
  let alive = true;
  let timer = null;
  let ruleNames = new Map();

  replace(form,
    h('label', { class: 'field inline' }, h('span', { text: 'Status' }),
      h('select', { name: 'status' }, STATUSES.map(([v, label]) => h('option', { value: v, text: label, selected: v === filters.status })))),
    h('label', { class: 'field inline' }, h('span', { text: 'Severity' }),
      h('select', { name: 'severity' }, h('option', { value: '', text: 'Any' }),
        SEVERITIES.map((v) => h('option', { value: v, text: SEVERITY[v][0], selected: v === filters.severity })))),
    h('button', { type: 'submit', class: 'primary', text: 'Apply' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    filters.status = String(data.get('status') || 'unresolved');
    filters.severity = String(data.get('severity') || '');
    clearTimeout(timer);
    refresh();
  });

  async function run(alert, action) {
    if (await act(alert, action, toast)) {
      clearTimeout(timer);
      await refresh();
    }
  }

  async function loadStats() {
    const st = await call('/api/v1/admin/alerts/statistics');
    const open = st.open_by_severity;
    replace(stats,
      h('div', { class: 'card-head' }, h('h2', { id: 'stats-title', text: 'Unresolved and the last 7 days' })),
      h('dl', { class: 'stats wide' },
        stat('Critical', num(open.critical), 'open_critical'),
        stat('Warning', num(open.warning), 'open_warning'),
        stat('Info', num(open.info), 'open_info'),
        stat('Opened, 7 days', num(st.opened), 'opened'),
        stat('Mean time to acknowledge', seconds(st.mean_seconds_to_acknowledge), 'mtta'),
        stat('Mean time to resolve', seconds(st.mean_seconds_to_resolve), 'mttr')),
      stackedBar([
        { name: 'Critical', value: open.critical, tone: 'failed' },
        { name: 'Warning', value: open.warning, tone: 'retried' },
        { name: 'Info', value: open.info, tone: 'sent' },
      ], { label: 'unresolved alerts by severity' }),
      legend([{ name: 'Critical', tone: 'failed' }, { name: 'Warning', tone: 'retried' }, { name: 'Info', tone: 'sent' }]));
  }

  async function loadAlerts() {
    const statuses = filters.status === 'unresolved' ? ['open', 'acknowledged'] : filters.status === 'any' ? [''] : [filters.status];
    const pages = await Promise.all(statuses.map((status) =>
      call(`/api/v1/admin/alerts${query({ status, severity: filters.severity, limit: 100 })}`)));
    const items = pages.flatMap((p) => p.items).sort((a, b) => b.opened_at.localeCompare(a.opened_at));
    if (items.some((a) => !ruleNames.has(a.rule_id))) await guard(rules, loadRules);
    if (!alive) return;
    const more = pages.some((p) => p.next_cursor);
    const focused = document.activeElement && document.activeElement.closest('[data-alert]');
    const keep = focused ? [focused.closest('[data-alert]').dataset.alert, document.activeElement.dataset.action] : null;
    replace(list,
      h('div', { class: 'card-head' }, h('h2', { id: 'alerts-title', text: 'Alerts' }),
        h('span', { class: 'muted', 'data-field': 'shown', text: `${num(items.length)} shown${more ? ' (the newest 100 of each status)' : ''}` })),
      items.length === 0 ? empty('No alert matches these filters.') :
        h('table', { class: 'grid-table alerts' },
          h('thead', {}, h('tr', {}, ['Severity', 'Alert', 'Rule', 'Status', 'Level', 'Opened', 'Acknowledged', ''].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, items.map((a) => h('tr', { 'data-alert': a.id, class: `sev-${a.severity}` },
            h('td', {}, severityBadge(a.severity)),
            h('th', { scope: 'row' }, h('a', { href: `#/alerts/${encodeURIComponent(a.id)}`, text: a.summary })),
            h('td', { text: ruleNames.get(a.rule_id) || '—' }),
            h('td', { 'data-field': 'status' }, statusBadge(a.status)),
            h('td', { text: num(a.escalation_level) }),
            h('td', {}, time(a.opened_at)),
            h('td', {}, a.acknowledged_at ? [time(a.acknowledged_at), a.acknowledged_by ? h('span', { class: 'muted', text: ` by ${a.acknowledged_by}` }) : ''] : '—'),
            h('td', {}, h('div', { class: 'row-actions' }, actions(a, run))))))));
    if (keep) {
      const again = list.querySelector(`[data-alert="${keep[0]}"] ${keep[1] ? `[data-action="${keep[1]}"]` : 'a'}`);
      if (again) again.focus();
    }
  }

  async function toggleRule(rule) {
    const enable = !rule.enabled;
    const ok = await confirm(`${enable ? 'Enable' : 'Disable'} ${rule.name}?`,
      enable ? 'The rule is evaluated again from its next period.' : 'The rule stops being evaluated; its open alerts stay until resolved.',
      { action: enable ? 'Enable rule' : 'Disable rule', danger: !enable });
    if (!ok) return;
    const body = {
      name: rule.name, metric: rule.metric, threshold: rule.threshold, window_secs: rule.window_secs,
      severity: rule.severity, cooldown_secs: rule.cooldown_secs, enabled: enable,
      escalation: rule.escalation.map((l) => ({ after_minutes: l.after_minutes, channels: l.channels.map((c) => ({ type: c.type })) })),
    };
    if (rule.channel) body.channel = rule.channel;
    if (rule.queue) body.queue = rule.queue;
    if (rule.min_events !== null && rule.min_events !== undefined) body.min_events = rule.min_events;
    try {
      await call(`/api/v1/admin/alert-rules/${encodeURIComponent(rule.id)}`, { method: 'PUT', body });
      toast(`${rule.name} ${enable ? 'enabled' : 'disabled'}`);
      await loadRules();
      const again = rules.querySelector(`[data-rule="${rule.id}"] button`);
      if (again) again.focus();
    } catch (err) {
      toast(`Could not change ${rule.name}: ${err.message}`, 'bad');
    }
  }

  // Only rules that notify in-app or by email are toggled here: the API
  // never shows a webhook's secret or a routing key, so saving such a rule
  // back would need them typed again.
  const simple = (rule) => rule.escalation.every((l) => l.channels.every((c) => c.type === 'in_app' || c.type === 'email'));

  async function loadRules() {
    const data = await call('/api/v1/admin/alert-rules');
    ruleNames = new Map(data.items.map((r) => [r.id, r.name]));
    replace(rules,
      h('div', { class: 'card-head' }, h('h2', { id: 'rules-title', text: 'Rules' }),
        h('span', { class: 'muted', text: `${num(data.items.length)} rules` })),
      data.items.length === 0 ? empty('No alert rule yet.') :
        h('table', { class: 'grid-table rules' },
          h('thead', {}, h('tr', {}, ['Rule', 'Metric', 'Subject', 'Threshold', 'Window', 'Severity', 'Notifies', 'State', ''].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.items.map((r) => h('tr', { 'data-rule': r.id },
            h('th', { scope: 'row' }, r.name, r.organization_id ? '' : h('span', { class: 'muted', text: ' (platform-wide)' })),
            h('td', {}, h('code', { text: r.metric })),
            h('td', { text: r.channel || r.queue || 'all' }),
            h('td', { text: `${r.metric === 'no_worker_alive' ? '<' : r.metric === 'baa_expiring' ? '≤' : '≥'} ${r.threshold} ${r.unit}` }),
            h('td', { text: span(r.window_secs) }),
            h('td', {}, severityBadge(r.severity)),
            h('td', { text: r.escalation.map((l) => `${l.after_minutes} min: ${l.channels.map((c) => c.type).join(', ')}`).join('; ') || '—' }),
            h('td', { 'data-field': 'enabled' }, r.enabled ? badge('Enabled', 'ok') : badge('Disabled', 'neutral')),
            h('td', {}, simple(r) ? h('button', {
              type: 'button', class: r.enabled ? 'danger-ghost' : 'primary', onclick: () => toggleRule(r),
              text: r.enabled ? 'Disable' : 'Enable', 'aria-label': `${r.enabled ? 'Disable' : 'Enable'} ${r.name}`,
            }) : h('span', { class: 'muted', text: 'change through the API' })))))));
  }

  async function guard(box, load) {
    try {
      await load();
    } catch (err) {
      if (alive) replace(box, errorBox(err));
    }
  }

  // Rules first (the alerts show their rule's name), and again when an
  // alert names a rule not seen yet.
  async function refresh() {
    if (!ruleNames.size) await guard(rules, loadRules);
    if (!alive) return;
    await Promise.all([guard(stats, loadStats), guard(list, loadAlerts)]);
    // One pending refresh however many ran at once (the timer's and an
    // action's).
    clearTimeout(timer);
    if (alive) timer = setTimeout(refresh, 5000);
  }
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}

const EVENT = { opened: 'Opened', escalated: 'Escalated', acknowledged: 'Acknowledged', resolved: 'Resolved' };

/** One alert with its history. */
function mountOne(root, { match, toast }) {
  const id = decodeURIComponent(match[1]);
  const head = h('div', { class: 'page-actions' });
  const summary = h('section', { class: 'card', 'aria-label': 'Alert' }, h('p', { class: 'loading', text: 'Loading…' }));
  const history = h('section', { class: 'card', 'aria-labelledby': 'history-title' });
  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/alerts', text: 'Alerts' }), ' / ', id.slice(0, 8)),
    h('div', { class: 'page-head' }, h('h1', { text: 'Alert' }), head), summary, history);
  let alive = true;

  async function run(alert, action) {
    if (await act(alert, action, toast)) {
      await load();
      const again = head.querySelector('button');
      if (again) again.focus();
    }
  }

  async function load() {
    let data;
    try {
      data = await call(`/api/v1/admin/alerts/${encodeURIComponent(id)}`);
    } catch (err) {
      if (alive) replace(summary, errorBox(err));
      return;
    }
    if (!alive) return;
    const a = data.alert;
    replace(head, actions(a, run));
    replace(summary,
      h('div', { class: 'card-head' }, h('h2', { text: a.summary }), severityBadge(a.severity),
        h('span', { 'data-field': 'status' }, statusBadge(a.status))),
      h('dl', { class: 'stats wide' },
        stat('Subject', a.subject, 'subject'),
        stat('Value', Number.isInteger(a.value) ? num(a.value) : a.value.toFixed(2), 'value'),
        stat('Escalation level', num(a.escalation_level), 'level'),
        stat('Opened', when(a.opened_at), 'opened_at'),
        stat('Acknowledged', when(a.acknowledged_at), 'acknowledged'),
        stat('Resolved', when(a.resolved_at), 'resolved')),
      a.acknowledged_by || a.resolved_by ? h('dl', { class: 'detail' },
        a.acknowledged_by ? [h('dt', { text: 'Acknowledged by' }), h('dd', { 'data-field': 'acknowledged_by', text: a.acknowledged_by })] : null,
        a.resolved_by ? [h('dt', { text: 'Resolved by' }), h('dd', { 'data-field': 'resolved_by', text: a.resolved_by })] : null) : null);
    replace(history,
      h('h2', { id: 'history-title', text: 'History' }),
      data.history.length === 0 ? empty('No event yet.') :
        h('ol', { class: 'timeline' }, data.history.map((ev) => h('li', { class: `ev ev-alert-${ev.kind}`, 'data-event': ev.kind },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          h('div', { class: 'ev-head' }, h('strong', { text: EVENT[ev.kind] || ev.kind }),
            ev.level !== null && ev.level !== undefined ? badge(`level ${ev.level}`, 'neutral') : null,
            h('span', { class: 'muted', text: `${when(ev.at)} · ${ev.actor}` })),
          ev.notifications.length ? h('table', { class: 'grid-table compact' },
            h('caption', { class: 'muted', text: 'Notified' }),
            h('thead', {}, h('tr', {}, ['Channel', 'Action', 'Status', 'Attempts', 'Answer', 'Sent'].map((t) => h('th', { scope: 'col', text: t })))),
            h('tbody', {}, ev.notifications.map((n) => h('tr', {},
              h('th', { scope: 'row', text: n.channel }),
              h('td', { text: n.action }),
              h('td', {}, badge(n.status, n.status === 'sent' ? 'ok' : n.status === 'failed' ? 'bad' : 'neutral')),
              h('td', { text: num(n.attempts) }),
              h('td', { class: 'error-text', text: n.last_error || (n.response_status ? `HTTP ${n.response_status}` : '—') }),
              h('td', {}, time(n.sent_at)))))) : null))));
  }
  load();
  return () => {
    alive = false;
  };
}
