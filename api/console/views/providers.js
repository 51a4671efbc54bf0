// Providers: every provider config with its circuit, rate tokens and last
// error; pausing or resuming one (after a confirmation).

import { call } from '../api.js';
import { h, badge, errorBox, empty, time, replace } from '../dom.js';
import { confirm } from '../dialog.js';

const CIRCUIT = { closed: ['Closed', 'ok'], open: ['Open', 'bad'], half_open: ['Half open', 'warn'] };

/** Mounts the providers page. */
export function mount(root, { toast }) {
  const box = h('section', { class: 'card' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Providers' })), box);
  let alive = true;
  let timer = null;

  async function toggle(p) {
    const pause = !p.paused;
    const ok = await confirm(`${pause ? 'Pause' : 'Resume'} ${p.name}?`,
      pause ? `Sends stop using ${p.name} (${p.provider}); they go to the next provider for ${p.channel || 'the channel'}, or wait.`
        : `Sends use ${p.name} (${p.provider}) again.`,
      { action: pause ? 'Pause provider' : 'Resume provider', danger: pause });
    if (!ok) return;
    try {
      await call(`/api/v1/ops/providers/${encodeURIComponent(p.id)}/${pause ? 'pause' : 'resume'}`, { method: 'POST', body: {} });
      toast(`${p.name} ${pause ? 'paused' : 'resumed'}`);
      clearTimeout(timer);
      await refresh();
      const again = box.querySelector(`[data-provider="${p.id}"] button`);
      if (again) again.focus();
    } catch (err) {
      toast(`Could not change ${p.name}: ${err.message}`, 'bad');
    }
  }

  async function refresh() {
    try {
      const data = await call('/api/v1/ops/providers');
      if (!alive) return;
      const focused = document.activeElement && document.activeElement.closest('[data-provider]');
      const keep = focused ? focused.dataset.provider : null;
      replace(box, data.items.length === 0 ? empty('No provider is configured.') :
        h('table', { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['Name', 'Provider', 'Channel', 'State', 'Circuit', 'Rate tokens', 'Last error', ''].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, data.items.map((p) => {
            const [label, tone] = CIRCUIT[p.circuit] || [p.circuit, 'neutral'];
            return h('tr', { 'data-provider': p.id },
              h('th', { scope: 'row', text: p.name }),
              h('td', { text: p.provider }),
              h('td', { text: p.channel || '—' }),
              h('td', {}, !p.enabled ? badge('Disabled', 'neutral') : p.paused ? badge('Paused', 'warn') : badge('Active', 'ok'),
                p.paused_until ? h('span', { class: 'muted' }, ' until ', time(p.paused_until)) : ''),
              h('td', {}, badge(label, tone)),
              h('td', { text: p.rate_tokens === null ? '—' : p.rate_tokens.toFixed(1) }),
              h('td', { class: 'error-text' }, p.last_error ? [p.last_error, ' ', time(p.last_error_at)] : '—'),
              h('td', {}, h('button', {
                type: 'button', class: p.paused ? 'primary' : 'danger-ghost', onclick: () => toggle(p),
                text: p.paused ? 'Resume' : 'Pause', 'aria-label': `${p.paused ? 'Resume' : 'Pause'} ${p.name}`,
              })));
          }))));
      if (keep) {
        const again = box.querySelector(`[data-provider="${keep}"] button`);
        if (again) again.focus();
      }
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
