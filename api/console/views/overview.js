// Overview: a card per queue (depth, due, in flight, paused, the last
// minute's counts and a live throughput line), kept current from the
// operations event stream, or by polling every 2 s where the stream cannot
// be had.

import { call, stream } from '../api.js';
import { h, num, ms, badge, errorBox, time, replace } from '../dom.js';
import { sparkline, stackedBar } from '../charts.js';

const KEEP = 90; // samples per sparkline (3 min at one per 2 s)

function depthParts(q) {
  return [
    { name: 'In Redis', value: q.backlog || 0, tone: 'backlog' },
    { name: 'Due', value: q.due, tone: 'due' },
    { name: 'In flight', value: q.in_flight, tone: 'flight' },
    { name: 'Deferred', value: q.deferred, tone: 'deferred' },
    { name: 'Scheduled', value: q.scheduled, tone: 'scheduled' },
  ];
}

/** Jobs waiting to run now: in Redis plus due in Postgres. */
export function waiting(q) {
  return (q.backlog || 0) + (q.due || 0);
}

function stat(label, value, field, tone) {
  return h('div', { class: `stat${tone ? ` stat-${tone}` : ''}` },
    h('dt', { text: label }), h('dd', { 'data-field': field, text: value }));
}

function card(q, samples) {
  const link = h('a', { href: `#/queues/${q.name}`, class: 'card-title', text: q.name });
  const head = h('div', { class: 'card-head' },
    h('h2', {}, link),
    badge(q.kind, 'neutral'),
    q.paused ? badge('Paused', 'warn') : null);
  const failing = q.last_1m.failed > 0;
  return h('article', {
    class: `card queue-card${q.paused ? ' is-paused' : ''}${failing ? ' is-failing' : ''}`,
    'data-queue': q.name, 'aria-labelledby': `q-${q.name}`,
  },
  head,
  h('dl', { class: 'stats' },
    stat('Waiting', num(waiting(q)), 'waiting'),
    stat('Due', num(q.due), 'due'),
    stat('In flight', num(q.in_flight), 'in_flight'),
    stat('Deferred', num(q.deferred + q.scheduled), 'deferred')),
  stackedBar(depthParts(q), { label: `${q.name} depth` }),
  h('div', { class: 'card-foot' },
    h('dl', { class: 'stats mini' },
      stat('Sent 1 m', num(q.last_1m.sent), 'sent_1m', 'ok'),
      stat('Failed 1 m', num(q.last_1m.failed), 'failed_1m', failing ? 'bad' : ''),
      stat('Retried 1 m', num(q.last_1m.retried), 'retried_1m'),
      stat('p99', ms(q.latency_ms.p99), 'p99')),
    sparkline(samples.map((x) => x.sent), {
      label: `${q.name}: sent in the last minute, over the last ${samples.length} updates`,
    })));
}

/** Mounts the overview. */
export function mount(root) {
  const samples = new Map();
  const status = h('span', { class: 'live muted', text: 'connecting…' });
  const totals = h('div', { class: 'totals' });
  const grid = h('div', { class: 'queue-grid', 'aria-live': 'off' });
  const head = h('div', { class: 'page-head' }, h('h1', { text: 'Queues' }), status);
  root.append(head, totals, grid);
  const ctrl = new AbortController();
  let timer = null;
  let mode = 'stream';
  let lastAt = null;

  function update(data) {
    lastAt = data.at;
    for (const q of data.items) {
      const list = samples.get(q.name) || [];
      list.push({ sent: q.last_1m.sent, failed: q.last_1m.failed });
      if (list.length > KEEP) list.shift();
      samples.set(q.name, list);
    }
    const sum = (f) => data.items.reduce((a, q) => a + f(q), 0);
    replace(totals,
      h('div', { class: 'total' }, h('span', { text: 'Waiting' }), h('strong', { 'data-total': 'waiting', text: num(sum(waiting)) })),
      h('div', { class: 'total' }, h('span', { text: 'In flight' }), h('strong', { 'data-total': 'in_flight', text: num(sum((q) => q.in_flight)) })),
      h('div', { class: 'total' }, h('span', { text: 'Sent, last minute' }), h('strong', { text: num(sum((q) => q.last_1m.sent)) })),
      h('div', { class: 'total' }, h('span', { text: 'Failed, last minute' }), h('strong', { text: num(sum((q) => q.last_1m.failed)) })),
      h('div', { class: 'total' }, h('span', { text: 'Paused queues' }), h('strong', { text: num(sum((q) => (q.paused ? 1 : 0))) })));
    const focused = document.activeElement && document.activeElement.closest('[data-queue]');
    const keep = focused ? focused.dataset.queue : null;
    replace(grid, data.items.map((q) => card(q, samples.get(q.name))));
    if (keep) {
      const link = grid.querySelector(`[data-queue="${keep}"] a`);
      if (link) link.focus({ preventScroll: true });
    }
    replace(status, mode === 'stream' ? badge('Live', 'ok') : badge('Polling every 2 s', 'neutral'), ' updated ', time(lastAt));
  }

  function fail(err) {
    replace(status, badge('Not updating', 'bad'));
    if (!grid.firstChild) grid.append(errorBox(err));
  }

  async function poll() {
    mode = 'poll';
    try {
      update(await call('/api/v1/ops/queues', { signal: ctrl.signal }));
    } catch (err) {
      if (ctrl.signal.aborted) return;
      fail(err);
    }
    if (!ctrl.signal.aborted) timer = setTimeout(poll, 2000);
  }

  (async () => {
    try {
      update(await call('/api/v1/ops/queues', { signal: ctrl.signal }));
    } catch (err) {
      if (ctrl.signal.aborted) return;
      fail(err);
    }
    // A stream ends after a while (10 minutes): open the next one. One that
    // cannot be opened or breaks gives way to polling.
    for (;;) {
      try {
        await stream('/api/v1/ops/stream', (name, data) => {
          if (name === 'queues') update(data);
        }, ctrl.signal);
      } catch {
        break;
      }
      if (ctrl.signal.aborted) return;
    }
    if (!ctrl.signal.aborted) poll();
  })();

  return () => {
    ctrl.abort();
    clearTimeout(timer);
  };
}
