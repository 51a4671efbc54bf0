// Search by a notification id, idempotency key, batch id, bulk job id or
// subscriber external id; a notification's timeline from acceptance to
// delivery (no recipient address, no body).

import { call, query } from '../api.js';
import { h, badge, errorBox, empty, time, when, num, replace } from '../dom.js';

const TONES = { sent: 'ok', delivered: 'ok', read: 'ok', failed: 'bad', cancelled: 'neutral', discarded: 'neutral' };
const EVENT_TONES = { accepted: 'neutral', dispatched: 'neutral', attempt: 'warn', provider_event: 'ok', webhook: 'neutral', status: 'ok' };

function statusBadge(status) {
  return status ? badge(status, TONES[status] || 'warn') : '—';
}

function detailList(detail) {
  const entries = Object.entries(detail || {});
  if (!entries.length) return null;
  return h('dl', { class: 'detail' }, entries.map(([k, v]) => [
    h('dt', { text: k }),
    h('dd', { text: v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v) }),
  ]));
}

function timeline(data) {
  const n = data.notification;
  const first = data.events.length ? Date.parse(data.events[0].at) : 0;
  return h('div', { class: 'timeline-wrap' },
    h('section', { class: 'card', 'aria-labelledby': 'n-title' },
      h('div', { class: 'card-head' }, h('h2', { id: 'n-title', text: 'Notification' }), statusBadge(n.status)),
      h('dl', { class: 'stats wide' },
        [['Id', h('code', { text: n.id })], ['Channel', n.channel], ['Attempts', `${num(n.attempts)} of ${num(n.max_attempts)}`],
          ['Category', n.category || '—'], ['Created', when(n.created_at)], ['Sent', when(n.sent_at)], ['Delivered', when(n.delivered_at)],
          ['Provider message', n.provider_message_id ? h('code', { text: n.provider_message_id }) : '—'],
          ['Batch', n.batch_id ? h('code', { text: n.batch_id }) : '—'], ['Bulk job', n.bulk_job_id ? h('code', { text: n.bulk_job_id }) : '—'],
        ].map(([k, v]) => h('div', { class: 'stat' }, h('dt', { text: k }), h('dd', { 'data-field': k.toLowerCase() }, v)))),
      n.last_error ? h('p', { class: 'notice bad' }, h('strong', { text: 'Last error: ' }), n.last_error) : null),
    h('section', { class: 'card', 'aria-labelledby': 'tl-title' },
      h('h2', { id: 'tl-title', text: 'Timeline' }),
      data.events.length === 0 ? empty('No events yet.') :
        h('ol', { class: 'timeline' }, data.events.map((e) => h('li', { class: `ev ev-${e.kind}`, 'data-kind': e.kind },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          h('div', { class: 'ev-head' },
            badge(e.kind.replace('_', ' '), EVENT_TONES[e.kind] || 'neutral'),
            h('strong', { class: 'ev-title', text: e.title }),
            h('span', { class: 'muted' }, h('time', { datetime: e.at, text: when(e.at) }),
              first ? ` · +${((Date.parse(e.at) - first) / 1000).toFixed(1)} s` : '')),
          detailList(e.detail))))));
}

/** Mounts search, or the timeline of `match[1]` when `timeline`. */
export function mount(root, { match, params, timeline: showTimeline }) {
  const input = h('input', { type: 'search', name: 'q', maxlength: 200, value: params.get('q') || '', 'aria-label': 'Search', placeholder: 'Notification id, idempotency key, batch id, bulk job id or subscriber' });
  const form = h('form', { class: 'search card', role: 'search' }, input, h('button', { type: 'submit', class: 'primary', text: 'Search' }));
  const results = h('section', { 'aria-live': 'polite' });
  root.append(h('div', { class: 'page-head' }, h('h1', { text: showTimeline ? 'Notification timeline' : 'Search' })), form, results);
  let alive = true;

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (!q) return;
    const next = `#/search?q=${encodeURIComponent(q)}`;
    if (location.hash === next) run(q);
    else location.hash = next;
  });

  async function run(q) {
    replace(results, h('p', { class: 'loading', text: 'Searching…' }));
    try {
      const data = await call(`/api/v1/ops/search${query({ q })}`);
      if (!alive) return;
      replace(results, data.matches.length === 0 ? empty(`Nothing matches “${q}”.`) :
        h('div', { class: 'card' }, h('table', { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['Kind', 'Id', 'Status', 'Summary', 'Created'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.matches.map((m) => h('tr', { 'data-match': m.id },
            h('td', {}, badge(m.kind.replace('_', ' '), 'neutral')),
            h('th', { scope: 'row' }, m.kind === 'notification'
              ? h('a', { href: `#/notifications/${encodeURIComponent(m.id)}`, text: m.id })
              : h('code', { text: m.id })),
            h('td', {}, statusBadge(m.status)),
            h('td', { text: m.summary }),
            h('td', {}, time(m.created_at))))))));
    } catch (err) {
      if (alive) replace(results, errorBox(err));
    }
  }

  async function open(id) {
    replace(results, h('p', { class: 'loading', text: 'Loading…' }));
    try {
      const data = await call(`/api/v1/ops/notifications/${encodeURIComponent(id)}/timeline`);
      if (alive) replace(results, timeline(data));
    } catch (err) {
      if (alive) replace(results, errorBox(err));
    }
  }

  if (showTimeline) open(decodeURIComponent(match[1]));
  else if (input.value) run(input.value.trim());
  else input.focus();
  return () => {
    alive = false;
  };
}
