// Workers: every live worker process, the queues it serves, how busy it is
// (jobs in flight against its concurrency) and its last heartbeat.

import { call } from '../api.js';
import { h, s, num, errorBox, empty, time, replace } from '../dom.js';

function load(w) {
  const capacity = Object.values(w.concurrency || {}).reduce((a, n) => a + n, 0);
  const used = capacity ? Math.min(1, w.in_flight / capacity) : 0;
  return h('span', { class: 'load' },
    s('svg', { class: 'count-bar', viewBox: '0 0 100 8', preserveAspectRatio: 'none', role: 'img', 'aria-label': `${w.in_flight} of ${capacity} slots busy` },
      s('rect', { x: 0, y: 0, width: 100, height: 8, rx: 2, class: 'stack-bg' }),
      s('rect', { x: 0, y: 0, width: Math.max(used * 100, w.in_flight ? 2 : 0), height: 8, rx: 2, class: 'fill-flight' })),
    h('span', { text: `${num(w.in_flight)} / ${num(capacity)}` }));
}

/** Mounts the workers page. */
export function mount(root) {
  const box = h('section', { class: 'card' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Workers' })), box);
  let alive = true;
  let timer = null;
  async function refresh() {
    try {
      const data = await call('/api/v1/ops/workers');
      if (!alive) return;
      replace(box, data.items.length === 0 ? empty('No worker has sent a heartbeat recently.') :
        h('table', { class: 'grid-table' },
          h('caption', { class: 'muted', text: `${data.items.length} live worker${data.items.length === 1 ? '' : 's'}` }),
          h('thead', {}, h('tr', {}, ['Name', 'Host', 'PID', 'Queues', 'Busy', 'Started', 'Heartbeat', 'Version'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.items.map((w) => h('tr', { 'data-worker': w.name },
            h('th', { scope: 'row' }, h('code', { text: w.name })),
            h('td', { text: w.host }),
            h('td', { text: String(w.pid) }),
            h('td', { class: 'chips' }, w.queues.map((q) => h('a', { href: `#/queues/${q}`, class: 'chip', text: `${q} ×${(w.concurrency || {})[q] ?? '?'}` }))),
            h('td', {}, load(w)),
            h('td', {}, time(w.started_at)),
            h('td', {}, time(w.last_heartbeat)),
            h('td', { text: w.version }))))));
    } catch (err) {
      if (alive) replace(box, errorBox(err));
    }
    if (alive) timer = setTimeout(refresh, 5000);
  }
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
