// One queue: its state and counters, throughput history over 1 h, 24 h or
// 7 d, and pausing or resuming it (after a confirmation).

import { call } from '../api.js';
import { h, num, ms, badge, errorBox, time, when, replace } from '../dom.js';
import { timeChart, stackedBar, legend } from '../charts.js';
import { confirm, modal } from '../dialog.js';
import { waiting } from './overview.js';

const RANGES = [['1h', '1 hour'], ['24h', '24 hours'], ['7d', '7 days']];
const SERIES = [
  { key: 'sent', name: 'Sent', tone: 'sent', area: true },
  { key: 'failed', name: 'Failed', tone: 'failed' },
  { key: 'retried', name: 'Retried', tone: 'retried' },
];

function row(label, value, field) {
  return h('div', { class: 'stat' }, h('dt', { text: label }), h('dd', { 'data-field': field, text: value }));
}

function askReason(name) {
  return modal(`Pause ${name}?`, (close) => {
    const input = h('input', { type: 'text', name: 'reason', maxlength: 200, 'data-autofocus': true });
    const form = h('form', {},
      h('p', { text: `Workers stop taking ${name} jobs until it is resumed. Work keeps being accepted and waits.` }),
      h('label', { class: 'field' }, h('span', { text: 'Reason (optional)' }), input),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'ghost', onclick: () => close(undefined), text: 'Cancel' }),
        h('button', { type: 'submit', class: 'danger', text: 'Pause queue' })));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      close({ reason: input.value.trim() || undefined });
    });
    return form;
  });
}

/** Mounts the queue page for `match[1]`. */
export function mount(root, { match, params, toast }) {
  const name = match[1];
  let range = params.get('range') || '1h';
  if (!RANGES.some(([r]) => r === range)) range = '1h';
  const summary = h('section', { class: 'card', 'aria-label': 'State' }, h('p', { class: 'loading', text: 'Loading…' }));
  const chart = h('section', { class: 'card', 'aria-labelledby': 'hist-title' });
  const counts = h('div', { class: 'two-col' });
  const action = h('div', { class: 'page-actions' });
  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/overview', text: 'Queues' }), ' / ', name),
    h('div', { class: 'page-head' }, h('h1', { text: `Queue ${name}` }), action),
    summary, chart, counts);
  let alive = true;
  let timer = null;

  let shownPaused = null;
  const DEPTH = [['In Redis', 'backlog'], ['Due', 'due'], ['In flight', 'flight'], ['Deferred', 'deferred'], ['Scheduled', 'scheduled']];

  function showQueue(q) {
    // The button is rebuilt only when the state changes, so it keeps focus.
    if (q.paused !== shownPaused) {
      shownPaused = q.paused;
      const had = action.contains(document.activeElement);
      if (q.pausable === false && !q.paused) {
        replace(action, h('span', { class: 'muted', text: 'Cron-driven: cannot be paused' }));
      } else {
        replace(action, q.paused
          ? h('button', { type: 'button', class: 'primary', onclick: resume, text: 'Resume queue' })
          : h('button', { type: 'button', class: 'danger', onclick: pause, text: 'Pause queue' }));
        if (had) action.firstChild.focus();
      }
    }
    replace(summary,
      h('div', { class: 'card-head' },
        h('h2', { text: 'Now' }), badge(q.kind, 'neutral'),
        q.paused ? badge('Paused', 'warn') : badge('Running', 'ok')),
      q.paused ? h('p', { class: 'notice', 'data-field': 'paused' },
        `Paused ${when(q.paused_at)}`, q.paused_by ? ` by ${q.paused_by}` : '', q.pause_reason ? `: ${q.pause_reason}` : '') : null,
      h('dl', { class: 'stats wide' },
        row('Waiting', num(waiting(q)), 'waiting'),
        row('In Redis', num(q.backlog), 'backlog'),
        row('Due', num(q.due), 'due'),
        row('In flight', num(q.in_flight), 'in_flight'),
        row('Deferred', num(q.deferred), 'deferred'),
        row('Scheduled', num(q.scheduled), 'scheduled'),
        q.oldest_due_secs === undefined ? null : row('Oldest due', q.oldest_due_secs === null ? '—' : ms(q.oldest_due_secs * 1000), 'oldest_due')),
      stackedBar([
        { name: 'In Redis', value: q.backlog || 0, tone: 'backlog' },
        { name: 'Due', value: q.due, tone: 'due' },
        { name: 'In flight', value: q.in_flight, tone: 'flight' },
        { name: 'Deferred', value: q.deferred, tone: 'deferred' },
        { name: 'Scheduled', value: q.scheduled, tone: 'scheduled' },
      ], { label: `${name} depth` }),
      legend(DEPTH.map(([n, tone]) => ({ name: n, tone }))));
    replace(counts,
      h('section', { class: 'card', 'aria-labelledby': 'counts-title' },
        h('h2', { id: 'counts-title', text: 'Outcomes' }),
        h('table', { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['', 'Sent', 'Failed', 'Retried'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, [['Last minute', q.last_1m], ['Last 15 minutes', q.last_15m], ['Last hour', q.last_1h]].map(([label, c]) =>
            h('tr', {}, h('th', { scope: 'row', text: label }), h('td', { text: num(c.sent) }),
              h('td', { text: num(c.failed) }), h('td', { text: num(c.retried) })))))),
      h('section', { class: 'card', 'aria-labelledby': 'timing-title' },
        h('h2', { id: 'timing-title', text: 'Timing, last hour' }),
        h('dl', { class: 'stats wide' },
          row('Run time p50', ms(q.duration_ms.p50), 'duration_p50'),
          row('Run time p99', ms(q.duration_ms.p99), 'duration_p99'),
          row('Wait p50', ms(q.latency_ms.p50), 'latency_p50'),
          row('Wait p99', ms(q.latency_ms.p99), 'latency_p99')),
        h('p', { class: 'muted', text: 'Run time: a job\'s handling. Wait: from due to picked up.' })));
  }

  async function loadQueue() {
    try {
      const q = await call(`/api/v1/ops/queues/${encodeURIComponent(name)}`);
      if (alive) showQueue(q);
    } catch (err) {
      if (alive) replace(summary, errorBox(err));
    }
    if (alive) timer = setTimeout(loadQueue, 2000);
  }

  async function loadHistory() {
    const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Range' },
      RANGES.map(([r, label]) => h('button', {
        type: 'button', 'aria-pressed': String(r === range), class: r === range ? 'tab on' : 'tab',
        onclick: () => { range = r; loadHistory(); }, text: label,
      })));
    const body = h('div', {}, h('p', { class: 'loading', text: 'Loading…' }));
    replace(chart, h('div', { class: 'card-head' }, h('h2', { id: 'hist-title', text: 'Throughput' }), tabs), body);
    try {
      const hist = await call(`/api/v1/ops/queues/${encodeURIComponent(name)}/history?range=${range}`);
      if (!alive) return;
      replace(body, timeChart(hist.points, SERIES, { step: hist.step_secs, title: `${name} throughput over ${range}` }),
        h('p', { class: 'muted', text: `One point per ${hist.step_secs >= 3600 ? `${hist.step_secs / 3600} h` : `${hist.step_secs / 60} min`}.` }));
    } catch (err) {
      if (alive) replace(body, errorBox(err));
    }
  }

  async function pause() {
    const answer = await askReason(name);
    if (!answer) return;
    try {
      showQueue(await call(`/api/v1/ops/queues/${encodeURIComponent(name)}/pause`, { method: 'POST', body: answer }));
      toast(`${name} paused`);
    } catch (err) {
      toast(`Could not pause ${name}: ${err.message}`, 'bad');
    }
  }

  async function resume() {
    if (!(await confirm(`Resume ${name}?`, `Workers start taking ${name} jobs again, the waiting ones first.`, { action: 'Resume queue' }))) return;
    try {
      showQueue(await call(`/api/v1/ops/queues/${encodeURIComponent(name)}/resume`, { method: 'POST', body: {} }));
      toast(`${name} resumed`);
    } catch (err) {
      toast(`Could not resume ${name}: ${err.message}`, 'bad');
    }
  }

  loadQueue();
  loadHistory();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
