// Error tracking: failures grouped by cause (reason, class, kind,
// provider, channel) with their occurrences as bars, first and last seen
// and recoveries; statistics by class, channel and kind over a range; and a
// group's page (#/errors/<id>) with its samples, the organisations it
// touches and the notifications that recovered from it.

import { call, query } from '../api.js';
import { h, num, badge, errorBox, empty, time, when, replace } from '../dom.js';
import { meter, legend } from '../charts.js';

export const CLASSES = ['transient', 'permanent', 'validation', 'authorization', 'network', 'database', 'external_provider'];
const KINDS = ['delivery', 'webhook', 'bulk_job', 'shipment', 'job', 'api'];
const CHANNELS = ['email', 'sms', 'push', 'whatsapp', 'inapp'];
const RANGES = [['24h', '24 hours', 86400], ['7d', '7 days', 604800], ['30d', '30 days', 2592000]];

function classBadge(c) {
  return h('span', { class: `badge class-${CLASSES.includes(c) ? c : 'other'}`, text: c.replace('_', ' ') });
}

function stat(label, value, field) {
  return h('div', { class: 'stat' }, h('dt', { text: label }), h('dd', { 'data-field': field, text: value }));
}

function pct(v) {
  return v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)} %`;
}

function select(name, label, options, value) {
  return h('label', { class: 'field inline' }, h('span', { text: label }),
    h('select', { name }, h('option', { value: '', text: 'Any' }),
      options.map((o) => h('option', { value: o, text: o.replace('_', ' '), selected: o === value }))));
}

/** A table of counts with a bar each (occurrences, with recoveries). */
function countTable(rows, caption, field) {
  const max = Math.max(1, ...rows.map((r) => r.occurrences));
  return h('table', { class: 'grid-table compact', 'data-counts': field },
    h('caption', {}, h('strong', { text: caption })),
    h('thead', {}, h('tr', {}, ['', 'Occurrences', 'Recoveries'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows.map((r) => h('tr', { 'data-name': r.name },
      h('th', { scope: 'row' }, field === 'class' ? classBadge(r.name) : r.name),
      h('td', { class: 'count-cell' }, meter([{ value: Math.min(r.recoveries, r.occurrences), tone: 'sent' }, { value: Math.max(0, r.occurrences - r.recoveries), tone: 'failed' }], max), h('span', { 'data-field': 'occurrences', text: num(r.occurrences) })),
      h('td', { text: num(r.recoveries) })))));
}

/** Mounts the errors page, or a group's page for `match[1]`. */
export function mount(root, ctx) {
  if (ctx.match[1]) return mountGroup(root, ctx);
  const filters = { class: '', kind: '', channel: '' };
  let range = '24h';
  const stats = h('section', { class: 'card', 'aria-labelledby': 'stats-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  const form = h('form', { class: 'filters card', 'aria-label': 'Filters' },
    select('class', 'Class', CLASSES, ''), select('kind', 'Kind', KINDS, ''), select('channel', 'Channel', CHANNELS, ''),
    h('button', { type: 'submit', class: 'primary', text: 'Apply' }));
  const groups = h('section', { class: 'card', 'aria-labelledby': 'groups-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Errors' })), stats, form, groups);
  let alive = true;
  let items = [];
  let cursor = null;

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    for (const k of Object.keys(filters)) filters[k] = String(data.get(k) || '');
    loadGroups();
  });

  async function loadStats() {
    const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Range' },
      RANGES.map(([r, label]) => h('button', {
        type: 'button', 'aria-pressed': String(r === range), class: r === range ? 'tab on' : 'tab',
        onclick: () => { range = r; loadStats().then(() => stats.querySelector('.tab.on').focus()); }, text: label,
      })));
    const span = RANGES.find(([r]) => r === range)[2];
    try {
      const st = await call(`/api/v1/errors/statistics${query({ since: new Date(Date.now() - span * 1000).toISOString() })}`);
      if (!alive) return;
      replace(stats,
        h('div', { class: 'card-head' }, h('h2', { id: 'stats-title', text: 'Occurrences' }), tabs),
        h('dl', { class: 'stats wide' },
          stat('Occurrences', num(st.occurrences), 'occurrences'),
          stat('Recoveries', num(st.recoveries), 'recoveries'),
          stat('Recovery rate', pct(st.recovery_rate), 'recovery_rate')),
        h('div', { class: 'three-col' },
          countTable(st.by_class, 'By class', 'class'),
          countTable(st.by_channel, 'By channel', 'channel'),
          countTable(st.by_kind, 'By kind', 'kind')),
        legend([{ name: 'Recovered', tone: 'sent' }, { name: 'Not recovered', tone: 'failed' }]),
        h('p', { class: 'muted', text: `From ${when(st.since)} to ${when(st.until)}; a recovery is a notification sent after failing in a group.` }));
    } catch (err) {
      if (alive) replace(stats, h('div', { class: 'card-head' }, h('h2', { id: 'stats-title', text: 'Occurrences' }), tabs), errorBox(err));
    }
  }

  async function loadGroups(more = false) {
    let data;
    try {
      data = await call(`/api/v1/errors${query({ ...filters, limit: 50, cursor: more ? cursor : '' })}`);
    } catch (err) {
      if (alive) replace(groups, h('h2', { id: 'groups-title', text: 'Groups' }), errorBox(err));
      return;
    }
    if (!alive) return;
    items = more ? items.concat(data.items) : data.items;
    cursor = data.next_cursor;
    const max = Math.max(1, ...items.map((g) => g.occurrences));
    replace(groups,
      h('div', { class: 'card-head' }, h('h2', { id: 'groups-title', text: 'Groups' }),
        h('span', { class: 'muted', text: `${num(items.length)} shown, last seen first` })),
      items.length === 0 ? empty('No error group matches these filters.') :
        h('table', { class: 'grid-table groups' },
          h('thead', {}, h('tr', {}, ['Occurrences', 'Reason', 'Class', 'Kind', 'Provider', 'Channel', 'Recovered', 'Orgs', 'First seen', 'Last seen'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, items.map((g) => h('tr', { 'data-error': g.id },
            h('td', { class: 'count-cell' },
              meter([{ value: g.recoveries, tone: 'sent' }, { value: Math.max(0, g.occurrences - g.recoveries), tone: 'failed' }], max),
              h('strong', { 'data-field': 'occurrences', text: num(g.occurrences) })),
            h('th', { scope: 'row' }, h('a', { href: `#/errors/${g.id}`, 'aria-label': `${g.reason}: details` }, h('code', { text: g.reason })),
              g.source ? h('span', { class: 'muted', text: ` ${g.source}` }) : ''),
            h('td', {}, classBadge(g.class)),
            h('td', { text: g.kind.replace('_', ' ') }),
            h('td', { text: g.provider || '—' }),
            h('td', { text: g.channel || '—' }),
            h('td', { 'data-field': 'recoveries', text: num(g.recoveries) }),
            h('td', { text: num(g.organizations) }),
            h('td', {}, time(g.first_seen)),
            h('td', {}, time(g.last_seen)))))),
      items.length ? legend([{ name: 'Recovered', tone: 'sent' }, { name: 'Not recovered', tone: 'failed' }]) : null,
      cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => loadGroups(true), text: 'Show more' }) : null);
  }

  loadStats();
  loadGroups();
  return () => {
    alive = false;
  };
}

/** One group: its counts, samples, organisations and recoveries. */
function mountGroup(root, { match }) {
  const id = decodeURIComponent(match[1]);
  const summary = h('section', { class: 'card', 'aria-label': 'Group' }, h('p', { class: 'loading', text: 'Loading…' }));
  const orgs = h('section', { class: 'card', 'aria-labelledby': 'orgs-title', hidden: true });
  const recov = h('section', { class: 'card', 'aria-labelledby': 'recoveries-title' });
  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/errors', text: 'Errors' }), ' / ', id.slice(0, 8)),
    h('div', { class: 'page-head' }, h('h1', { text: 'Error group' })), summary, orgs, recov);
  let alive = true;
  let items = [];
  let cursor = null;

  async function loadGroup() {
    let data;
    try {
      data = await call(`/api/v1/errors/${encodeURIComponent(id)}`);
    } catch (err) {
      if (alive) replace(summary, errorBox(err));
      return;
    }
    if (!alive) return;
    const g = data.group;
    const linkable = g.kind === 'delivery';
    replace(summary,
      h('div', { class: 'card-head' }, h('h2', {}, h('code', { text: g.reason })), classBadge(g.class), badge(g.kind.replace('_', ' '), 'neutral')),
      h('dl', { class: 'stats wide' },
        stat('Occurrences', num(g.occurrences), 'occurrences'),
        stat('Recoveries', num(g.recoveries), 'recoveries'),
        stat('Provider', g.provider || '—', 'provider'),
        stat('Channel', g.channel || '—', 'channel'),
        stat('Source', g.source || '—', 'source'),
        stat('Organisations', num(g.organizations), 'organizations'),
        stat('First seen', when(g.first_seen), 'first_seen'),
        stat('Last seen', when(g.last_seen), 'last_seen')),
      meter([{ value: g.recoveries, tone: 'sent' }, { value: Math.max(0, g.occurrences - g.recoveries), tone: 'failed' }], Math.max(g.occurrences, 1), { width: 300 }),
      legend([{ name: `Recovered ${num(g.recoveries)}`, tone: 'sent' }, { name: `Not recovered ${num(Math.max(0, g.occurrences - g.recoveries))}`, tone: 'failed' }]),
      h('h3', { text: 'Samples' }),
      g.sample_ids.length === 0 ? empty('No sample kept.') :
        h('ul', { class: 'chips', 'data-field': 'samples' }, g.sample_ids.map((s) => h('li', {}, linkable
          ? h('a', { class: 'chip', href: `#/notifications/${encodeURIComponent(s)}`, text: s.slice(0, 8) + '…', title: s })
          : h('code', { class: 'chip', text: s, title: s })))));
    if (data.affected_organizations) {
      orgs.hidden = false;
      const max = Math.max(1, ...data.affected_organizations.map((o) => o.occurrences));
      replace(orgs, h('h2', { id: 'orgs-title', text: 'Organisations' }),
        h('table', { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['Organisation', 'Occurrences', 'Recoveries', 'Last seen'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.affected_organizations.map((o) => h('tr', {},
            h('th', { scope: 'row', text: o.name || (o.organization_id ? o.organization_id : 'the platform') }),
            h('td', { class: 'count-cell' }, meter([{ value: o.occurrences, tone: 'failed' }], max), num(o.occurrences)),
            h('td', { text: num(o.recoveries) }),
            h('td', {}, time(o.last_seen)))))));
    }
  }

  async function loadRecoveries(more = false) {
    let data;
    try {
      data = await call(`/api/v1/errors/${encodeURIComponent(id)}/recoveries${query({ limit: 50, cursor: more ? cursor : '' })}`);
    } catch (err) {
      if (alive) replace(recov, h('h2', { id: 'recoveries-title', text: 'Recoveries' }), errorBox(err));
      return;
    }
    if (!alive) return;
    items = more ? items.concat(data.items) : data.items;
    cursor = data.next_cursor;
    replace(recov,
      h('div', { class: 'card-head' }, h('h2', { id: 'recoveries-title', text: 'Recoveries' }),
        h('span', { class: 'muted', text: 'notifications sent after failing in this group, newest first' })),
      items.length === 0 ? empty('Nothing has recovered from this error yet.') :
        h('table', { class: 'grid-table recoveries' },
          h('thead', {}, h('tr', {}, ['Notification', 'Failed attempts before', 'Recovered'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, items.map((r) => h('tr', { 'data-recovery': r.notification_id },
            h('th', { scope: 'row' }, h('a', { href: `#/notifications/${encodeURIComponent(r.notification_id)}`, text: r.notification_id.slice(0, 8) + '…', title: r.notification_id })),
            h('td', { text: num(r.failures) }),
            h('td', {}, time(r.recovered_at)))))),
      cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => loadRecoveries(true), text: 'Show more' }) : null);
  }

  loadGroup();
  loadRecoveries();
  return () => {
    alive = false;
  };
}
