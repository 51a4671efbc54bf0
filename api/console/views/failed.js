// Failed work: failures grouped by kind, error class, provider and channel,
// filtered; the items of a group; retry or discard selected items, or a
// whole group (a background action whose progress is shown until it ends).

import { call, query } from '../api.js';
import { h, s, num, badge, errorBox, empty, time, when, replace } from '../dom.js';
import { confirm } from '../dialog.js';

const KINDS = ['notification', 'webhook', 'bulk_job', 'shipment'];
const CHANNELS = ['email', 'sms', 'push', 'whatsapp', 'inapp'];
const SINCE = [['1h', 'Last hour', 3600], ['24h', 'Last 24 hours', 86400], ['7d', 'Last 7 days', 604800], ['all', 'Any time', 0]];

function select(name, label, options, value) {
  const el = h('select', { name },
    h('option', { value: '', text: 'Any' }),
    options.map((o) => h('option', { value: o, text: o, selected: o === value })));
  return h('label', { class: 'field inline' }, h('span', { text: label }), el);
}

function text(name, label, value) {
  return h('label', { class: 'field inline' }, h('span', { text: label }),
    h('input', { type: 'text', name, value: value || '', maxlength: 200, size: 14 }));
}

/** Mounts the failed-work page. */
export function mount(root, { toast }) {
  const filters = { since: '24h', kind: '', channel: '', provider: '', error_class: '' };
  const form = h('form', { class: 'filters card', 'aria-label': 'Filters' });
  const groupsBox = h('section', { class: 'card', 'aria-labelledby': 'groups-title' });
  const itemsBox = h('section', { class: 'card', 'aria-labelledby': 'items-title', hidden: true });
  const progress = h('section', { class: 'card progress-box', role: 'status', hidden: true });
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Failed work' })), form, progress, groupsBox, itemsBox);
  let alive = true;
  let group = null;
  let selected = new Set();
  let items = [];
  let cursor = null;

  function apiFilters() {
    const span = SINCE.find(([k]) => k === filters.since);
    const since = span && span[2] ? new Date(Date.now() - span[2] * 1000).toISOString() : '';
    const all = { since, kind: filters.kind, channel: filters.channel, provider: filters.provider, error_class: filters.error_class };
    return Object.fromEntries(Object.entries(all).filter(([, v]) => v));
  }

  function drawForm() {
    replace(form,
      h('label', { class: 'field inline' }, h('span', { text: 'Failed' }),
        h('select', { name: 'since' }, SINCE.map(([k, label]) => h('option', { value: k, text: label, selected: k === filters.since })))),
      select('kind', 'Kind', KINDS, filters.kind),
      select('channel', 'Channel', CHANNELS, filters.channel),
      text('provider', 'Provider', filters.provider),
      text('error_class', 'Error class', filters.error_class),
      h('button', { type: 'submit', class: 'primary', text: 'Apply' }));
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    for (const k of Object.keys(filters)) filters[k] = String(data.get(k) || '').trim();
    group = null;
    itemsBox.hidden = true;
    loadGroups();
  });

  async function loadGroups() {
    replace(groupsBox, h('h2', { id: 'groups-title', text: 'Groups' }), h('p', { class: 'loading', text: 'Loading…' }));
    let data;
    try {
      data = await call(`/api/v1/ops/failed/groups${query(apiFilters())}`);
    } catch (err) {
      if (alive) replace(groupsBox, h('h2', { id: 'groups-title', text: 'Groups' }), errorBox(err));
      return;
    }
    if (!alive) return;
    const max = Math.max(1, ...data.groups.map((g) => g.count));
    replace(groupsBox,
      h('div', { class: 'card-head' }, h('h2', { id: 'groups-title', text: 'Groups' }),
        h('span', { class: 'muted', 'data-field': 'total', text: `${num(data.total)} failed` })),
      data.groups.length === 0 ? empty('Nothing failed with these filters.') :
        h('table', { class: 'grid-table groups' },
          h('thead', {}, h('tr', {}, ['Failures', 'Error', 'Kind', 'Provider', 'Channel', 'Orgs', 'Last seen', ''].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.groups.map((g) => h('tr', { 'data-group': g.key, class: group && group.key === g.key ? 'current' : '' },
            h('td', { class: 'count-cell' },
              s('svg', { class: 'count-bar', viewBox: '0 0 100 8', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
                s('rect', { x: 0, y: 0, width: 100, height: 8, rx: 2, class: 'stack-bg' }),
                s('rect', { x: 0, y: 0, width: Math.max(2, (g.count / max) * 100), height: 8, rx: 2, class: 'fill-failed' })),
              h('strong', { 'data-field': 'count', text: num(g.count) })),
            h('th', { scope: 'row' }, h('code', { text: g.error_class })),
            h('td', {}, badge(g.kind, 'neutral')),
            h('td', { text: g.provider || '—' }),
            h('td', { text: g.channel || '—' }),
            h('td', { text: num(g.organizations) }),
            h('td', {}, time(g.last_seen)),
            h('td', { class: 'row-actions' },
              h('button', { type: 'button', class: 'ghost', onclick: () => openGroup(g), text: 'Items', 'aria-label': `Items of ${g.error_class}` }),
              h('button', { type: 'button', onclick: () => groupAction('retry', g), text: 'Retry all', 'aria-label': `Retry all ${g.count} of ${g.error_class}` }),
              h('button', { type: 'button', class: 'danger-ghost', onclick: () => groupAction('discard', g), text: 'Discard all', 'aria-label': `Discard all ${g.count} of ${g.error_class}` })))))));
  }

  async function openGroup(g) {
    group = g;
    selected = new Set();
    items = [];
    cursor = null;
    itemsBox.hidden = false;
    await loadItems();
    const heading = itemsBox.querySelector('h2');
    if (heading) heading.focus();
  }

  async function loadItems(more = false) {
    try {
      const data = await call(`/api/v1/ops/failed${query({ ...apiFilters(), group: group.key, cursor: more ? cursor : '', limit: 50 })}`);
      if (!alive) return;
      items = more ? items.concat(data.items) : data.items;
      cursor = data.next_cursor;
      drawItems();
    } catch (err) {
      if (alive) replace(itemsBox, h('h2', { id: 'items-title', tabindex: '-1', text: 'Items' }), errorBox(err));
    }
  }

  function drawItems() {
    const all = h('input', {
      type: 'checkbox', 'aria-label': 'Select all shown', checked: items.length > 0 && selected.size === items.length,
      onchange: (e) => {
        selected = e.target.checked ? new Set(items.map((i) => `${i.kind}:${i.id}`)) : new Set();
        drawItems();
      },
    });
    const chosen = () => items.filter((i) => selected.has(`${i.kind}:${i.id}`));
    replace(itemsBox,
      h('div', { class: 'card-head' },
        h('h2', { id: 'items-title', tabindex: '-1', text: `Items: ${group.error_class}` }),
        h('span', { class: 'muted', 'data-field': 'selected', text: `${selected.size} selected` }),
        h('div', { class: 'page-actions' },
          h('button', { type: 'button', class: 'primary', disabled: selected.size === 0, onclick: () => idsAction('retry', chosen()), text: 'Retry selected' }),
          h('button', { type: 'button', class: 'danger', disabled: selected.size === 0, onclick: () => idsAction('discard', chosen()), text: 'Discard selected' }))),
      items.length === 0 ? empty('No items left in this group.') :
        h('table', { class: 'grid-table items' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all),
            ['Id', 'Kind', 'Channel', 'Provider', 'Attempts', 'Error', 'Failed'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, items.map((i) => {
            const key = `${i.kind}:${i.id}`;
            return h('tr', { 'data-item': i.id },
              h('td', {}, h('input', {
                type: 'checkbox', 'aria-label': `Select ${i.id}`, checked: selected.has(key),
                onchange: (e) => {
                  if (e.target.checked) selected.add(key);
                  else selected.delete(key);
                  drawItems();
                  const again = itemsBox.querySelector(`[data-item="${i.id}"] input`);
                  if (again) again.focus();
                },
              })),
              h('th', { scope: 'row' }, i.kind === 'notification'
                ? h('a', { href: `#/notifications/${encodeURIComponent(i.id)}`, text: i.id.slice(0, 8) + '…', title: i.id })
                : h('code', { text: i.id.slice(0, 8) + '…', title: i.id })),
              h('td', { text: i.kind }),
              h('td', { text: i.channel || '—' }),
              h('td', { text: i.provider || '—' }),
              h('td', { text: num(i.attempts) }),
              h('td', { class: 'error-text', text: i.error || '—' }),
              h('td', {}, time(i.failed_at)));
          }))),
      cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => loadItems(true), text: 'Show more' }) : null);
  }

  async function idsAction(action, list) {
    if (!list.length) return;
    const verb = action === 'retry' ? 'Retry' : 'Discard';
    const ok = await confirm(`${verb} ${list.length} item${list.length === 1 ? '' : 's'}?`,
      action === 'retry'
        ? 'They are queued again and sent by the workers.'
        : 'They stay failed and leave this list for good.',
      { action: verb, danger: action === 'discard' });
    if (!ok) return;
    try {
      const res = await call(`/api/v1/ops/failed/${action}`, { method: 'POST', body: { ids: list.map((i) => ({ kind: i.kind, id: i.id })) } });
      const done = action === 'retry' ? res.retried : res.discarded;
      toast(`${verb === 'Retry' ? 'Retried' : 'Discarded'} ${done}, skipped ${res.skipped}`);
      selected = new Set();
      await loadGroups();
      if (group) await loadItems();
    } catch (err) {
      toast(`${verb} failed: ${err.message}`, 'bad');
    }
  }

  async function groupAction(action, g) {
    const verb = action === 'retry' ? 'Retry' : 'Discard';
    const ok = await confirm(`${verb} all ${num(g.count)} failures?`,
      `Every failure of ${g.error_class}${g.provider ? ` at ${g.provider}` : ''} that matches the filters is ${action === 'retry' ? 'queued again' : 'discarded'}. This runs in the background; you can cancel it.`,
      { action: `${verb} all`, danger: action === 'discard' });
    if (!ok) return;
    let op;
    try {
      op = await call(`/api/v1/ops/failed/${action}`, { method: 'POST', body: { filter: { ...apiFilters(), group: g.key } } });
    } catch (err) {
      toast(`${verb} failed: ${err.message}`, 'bad');
      return;
    }
    follow(op);
  }

  async function follow(op) {
    progress.hidden = false;
    const bar = h('progress', { max: Math.max(op.matched, 1), value: op.processed });
    const line = h('span', { 'data-field': 'progress' });
    const cancel = h('button', {
      type: 'button', class: 'ghost', text: 'Cancel',
      onclick: async () => {
        cancel.disabled = true;
        try {
          await call(`/api/v1/ops/actions/${encodeURIComponent(op.id)}/cancel`, { method: 'POST', body: {} });
        } catch (err) {
          toast(`Cancel failed: ${err.message}`, 'bad');
        }
      },
    });
    replace(progress, h('h2', { text: `${op.action === 'retry' ? 'Retrying' : 'Discarding'} a group` }), bar, line, cancel);
    while (alive) {
      bar.max = Math.max(op.matched, 1);
      bar.value = op.processed;
      line.textContent = ` ${num(op.processed)} of ${num(op.matched)} · ${op.status}`;
      if (op.status !== 'running') break;
      await new Promise((r) => setTimeout(r, 500));
      try {
        op = await call(`/api/v1/ops/actions/${encodeURIComponent(op.id)}`);
      } catch (err) {
        line.textContent = ` ${err.message}`;
        return;
      }
    }
    if (!alive) return;
    cancel.remove();
    progress.append(h('p', { class: 'muted', text: `Finished ${when(op.finished_at)}.` }));
    toast(`${op.action === 'retry' ? 'Retry' : 'Discard'} ${op.status}: ${num(op.processed)} of ${num(op.matched)}`);
    await loadGroups();
    if (group) await loadItems();
  }

  drawForm();
  loadGroups();
  return () => {
    alive = false;
  };
}
