// Scheduler: every cron entry with its last and next tick and the replica
// that enqueued it, and when the dispatcher last swept.

import { call } from '../api.js';
import { h, errorBox, empty, time, replace } from '../dom.js';

/** Mounts the scheduler page. */
export function mount(root) {
  const sweep = h('section', { class: 'card', 'aria-label': 'Dispatcher' });
  const box = h('section', { class: 'card' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Scheduler' })), sweep, box);
  let alive = true;
  let timer = null;
  async function refresh() {
    try {
      const data = await call('/api/v1/ops/scheduler');
      if (!alive) return;
      replace(sweep, h('div', { class: 'card-head' }, h('h2', { text: 'Dispatcher' })),
        h('p', {}, 'Last sweep ', time(data.dispatcher.last_sweep),
          data.dispatcher.by ? h('span', { class: 'muted' }, ' by ', h('code', { text: data.dispatcher.by })) : ''));
      replace(box, data.entries.length === 0 ? empty('No cron entries.') :
        h('table', { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['Entry', 'Schedule', 'Queue', 'Last tick', 'Next tick', 'Enqueued by'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.entries.map((e) => h('tr', { 'data-entry': e.name },
            h('th', { scope: 'row', text: e.name }),
            h('td', {}, h('code', { text: e.schedule })),
            h('td', {}, h('a', { href: `#/queues/${e.queue}`, text: e.queue })),
            h('td', {}, time(e.last_tick)),
            h('td', {}, time(e.next_tick)),
            h('td', {}, e.last_enqueued_by ? h('code', { text: e.last_enqueued_by }) : '—'))))));
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
