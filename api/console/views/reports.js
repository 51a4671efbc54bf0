// Delivery reports: a daily, weekly or monthly report's totals and rates,
// volume per day (sent and failed), channels, providers and templates as
// bars, the busiest hours, the previous period and the trend; the 7-day
// forecast per channel; CSV and XLSX downloads; and the report schedules.

import { call, download, query } from '../api.js';
import { h, num, ms, badge, errorBox, empty, time, when, replace } from '../dom.js';
import { barChart, meter, legend } from '../charts.js';

const TEMPLATES = [['daily_summary', 'Daily', '24 hours'], ['weekly_performance', 'Weekly', '7 days'], ['monthly_comprehensive', 'Monthly', 'one month']];
const TEMPLATE_NAMES = Object.fromEntries(TEMPLATES.map(([k, label]) => [k, label]));
const TREND = { rising: ['Rising', 'ok'], falling: ['Falling', 'warn'], flat: ['Flat', 'neutral'] };

function stat(label, value, field, tone) {
  return h('div', { class: `stat${tone ? ` stat-${tone}` : ''}` }, h('dt', { text: label }), h('dd', { 'data-field': field, text: value }));
}

function pct(v) {
  return v === null || v === undefined ? '—' : `${v.toFixed(1)} %`;
}

function signed(v, unit) {
  if (v === null || v === undefined) return '—';
  return `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(v).toFixed(1)}${unit}`;
}

const day = (iso) => iso.slice(0, 10);

/** A table of slices (channel, provider, template) with sent and failed
 * as one bar against the largest slice. */
function sliceTable(slices, name, field) {
  const max = Math.max(1, ...slices.map((sl) => sl.totals.sent + sl.totals.failed));
  return h('table', { class: 'grid-table', 'data-slices': field },
    h('thead', {}, h('tr', {}, [name, 'Sent and failed', 'Accepted', 'Sent', 'Failed', 'Delivered', 'Failure rate', 'p99 wait'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, slices.map((sl) => h('tr', { 'data-key': sl.key },
      h('th', { scope: 'row', text: sl.key }),
      h('td', {}, meter([{ value: sl.totals.sent, tone: 'sent' }, { value: sl.totals.failed, tone: 'failed' }], max, { width: 160 })),
      h('td', { 'data-field': 'accepted', text: num(sl.totals.accepted) }),
      h('td', { 'data-field': 'sent', text: num(sl.totals.sent) }),
      h('td', { 'data-field': 'failed', text: num(sl.totals.failed) }),
      h('td', { text: num(sl.totals.delivered) }),
      h('td', { text: pct(sl.totals.failure_rate) }),
      h('td', { text: sl.totals.latency_p99_ms === null ? '—' : ms(sl.totals.latency_p99_ms) })))));
}

/** Mounts the reports page. */
export function mount(root, { params, toast }) {
  let template = params.get('template') || 'daily_summary';
  if (!TEMPLATE_NAMES[template]) template = 'daily_summary';
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Period' });
  const csv = h('button', { type: 'button', onclick: () => save('csv'), text: 'Download CSV' });
  const xlsx = h('button', { type: 'button', onclick: () => save('xlsx'), text: 'Download XLSX' });
  const again = h('button', { type: 'button', class: 'ghost', onclick: () => load(), text: 'Refresh' });
  const body = h('div', {}, h('p', { class: 'loading', text: 'Loading…' }));
  const forecast = h('section', { class: 'card', 'aria-labelledby': 'forecast-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  const schedules = h('section', { class: 'card', 'aria-labelledby': 'schedules-title' }, h('p', { class: 'loading', text: 'Loading…' }));
  root.append(
    h('div', { class: 'page-head' }, h('h1', { text: 'Reports' }), tabs, h('div', { class: 'page-actions' }, again, csv, xlsx)),
    body, forecast, schedules);
  let alive = true;

  function drawTabs() {
    replace(tabs, TEMPLATES.map(([k, label, span]) => h('button', {
      type: 'button', 'aria-pressed': String(k === template), class: k === template ? 'tab on' : 'tab', title: span,
      onclick: () => {
        template = k;
        drawTabs();
        tabs.querySelector('.tab.on').focus();
        load();
      },
      text: label,
    })));
  }

  async function save(format) {
    const button = format === 'csv' ? csv : xlsx;
    button.disabled = true;
    try {
      const name = await download(`/api/v1/reports${query({ template, format })}`, `report.${format}`);
      toast(`Saved ${name}`);
    } catch (err) {
      toast(`Could not download the report: ${err.message}`, 'bad');
    } finally {
      button.disabled = false;
    }
  }

  async function load() {
    let r;
    try {
      r = await call(`/api/v1/reports${query({ template, format: 'json' })}`);
    } catch (err) {
      if (alive) replace(body, errorBox(err));
      return;
    }
    if (!alive) return;
    const t = r.totals;
    const prev = r.previous;
    const [trendLabel, trendTone] = TREND[r.trend.direction] || [r.trend.direction, 'neutral'];
    const busiestMax = Math.max(1, ...r.busiest_hours.map((p) => p.totals.accepted));
    replace(body,
      h('section', { class: 'card', 'aria-labelledby': 'totals-title', 'data-template': r.template },
        h('div', { class: 'card-head' }, h('h2', { id: 'totals-title', text: `${TEMPLATE_NAMES[r.template] || r.template} report` }),
          h('span', { class: 'muted', 'data-field': 'range', text: `${when(r.from)} to ${when(r.to)}` })),
        h('dl', { class: 'stats wide' },
          stat('Accepted', num(t.accepted), 'accepted'),
          stat('Sent', num(t.sent), 'sent', 'ok'),
          stat('Delivered', num(t.delivered), 'delivered'),
          stat('Failed', num(t.failed), 'failed', t.failed ? 'bad' : ''),
          stat('Bounced', num(t.bounced), 'bounced'),
          stat('Read', num(t.read), 'read')),
        h('dl', { class: 'stats wide' },
          stat('Delivery rate', pct(t.delivery_rate), 'delivery_rate'),
          stat('Failure rate', pct(t.failure_rate), 'failure_rate'),
          stat('Bounce rate', pct(t.bounce_rate), 'bounce_rate'),
          stat('Read rate', pct(t.read_rate), 'read_rate'),
          stat('Wait p50', t.latency_p50_ms === null ? '—' : ms(t.latency_p50_ms), 'latency_p50'),
          stat('Wait p99', t.latency_p99_ms === null ? '—' : ms(t.latency_p99_ms), 'latency_p99'))),
      h('section', { class: 'card', 'aria-labelledby': 'days-title' },
        h('h2', { id: 'days-title', text: 'Volume per day' }),
        r.days.length === 0 ? empty('Nothing was sent in this period.') :
          barChart(r.days.map((p) => ({ label: day(p.start).slice(5), title: day(p.start), sent: p.totals.sent, failed: p.totals.failed })),
            [{ key: 'sent', name: 'Sent', tone: 'sent' }, { key: 'failed', name: 'Failed', tone: 'failed' }],
            { title: 'sent and failed per UTC day' })),
      h('div', { class: 'two-col' },
        h('section', { class: 'card', 'aria-labelledby': 'prev-title' },
          h('h2', { id: 'prev-title', text: 'Against the previous period' }),
          h('dl', { class: 'stats wide' },
            stat('Accepted before', num(prev.totals.accepted), 'prev_accepted'),
            stat('Volume change', signed(prev.accepted_change, ' %'), 'accepted_change'),
            stat('Delivery rate change', signed(prev.delivery_rate_change, ' pts'), 'delivery_rate_change'),
            stat('Failure rate change', signed(prev.failure_rate_change, ' pts'), 'failure_rate_change')),
          h('p', {}, 'Trend ', h('span', { 'data-field': 'trend' }, badge(trendLabel, trendTone)),
            h('span', { class: 'muted', text: ` ${signed(r.trend.slope_per_day, '')} accepted a day (least squares over the days)` })),
          h('p', { class: 'muted', text: `Previous period: ${when(prev.from)} to ${when(prev.to)}.` })),
        h('section', { class: 'card', 'aria-labelledby': 'busiest-title' },
          h('h2', { id: 'busiest-title', text: 'Busiest hours' }),
          r.busiest_hours.length === 0 ? empty('No activity.') :
            h('table', { class: 'grid-table compact', 'data-slices': 'busiest' },
              h('thead', {}, h('tr', {}, ['Hour (UTC)', 'Accepted', 'Sent', 'Failed'].map((x) => h('th', { scope: 'col', text: x })))),
              h('tbody', {}, r.busiest_hours.map((p) => h('tr', {},
                h('th', { scope: 'row', text: `${day(p.start)} ${p.start.slice(11, 13)}:00` }),
                h('td', { class: 'count-cell' }, meter([{ value: p.totals.accepted, tone: 'backlog' }], busiestMax), num(p.totals.accepted)),
                h('td', { text: num(p.totals.sent) }),
                h('td', { text: num(p.totals.failed) }))))))),
      h('section', { class: 'card', 'aria-labelledby': 'channels-title' },
        h('h2', { id: 'channels-title', text: 'By channel' }),
        r.by_channel.length === 0 ? empty('No channel was used.') : sliceTable(r.by_channel, 'Channel', 'channel'),
        r.by_channel.length ? legend([{ name: 'Sent', tone: 'sent' }, { name: 'Failed', tone: 'failed' }]) : null),
      h('section', { class: 'card', 'aria-labelledby': 'providers-title' },
        h('h2', { id: 'providers-title', text: 'By provider' }),
        r.by_provider.length === 0 ? empty('No provider was used.') : sliceTable(r.by_provider, 'Provider', 'provider')),
      h('section', { class: 'card', 'aria-labelledby': 'templates-title' },
        h('h2', { id: 'templates-title', text: 'By template' }),
        r.by_template.length === 0 ? empty('No template was used.') : sliceTable(r.by_template, 'Template', 'template')));
  }

  async function loadForecast() {
    try {
      const f = await call('/api/v1/reports/forecast');
      if (!alive) return;
      replace(forecast,
        h('div', { class: 'card-head' }, h('h2', { id: 'forecast-title', text: 'Forecast, next 7 days' }),
          h('span', { class: 'muted', text: 'accepted per UTC day: the mean of the same weekday over the last 4 weeks' })),
        f.channels.length === 0 ? empty('No channel has history to forecast from.') :
          h('div', { class: 'forecast-grid' }, f.channels.map((c) => h('figure', { class: 'forecast', 'data-channel': c.channel },
            h('figcaption', {}, h('strong', { text: c.channel }),
              h('span', { class: 'muted', text: ` · ${num(c.history_days)} days of history · held-out error ${c.holdout_mae === null ? '—' : `${c.holdout_mae.toFixed(1)} a day`}${c.holdout_mape === null ? '' : ` (${c.holdout_mape.toFixed(1)} %)`}` })),
            barChart(c.days.map((d) => ({ label: d.date.slice(5), title: d.date, accepted: Math.round(d.accepted * 10) / 10 })),
              [{ key: 'accepted', name: 'Forecast accepted', tone: 'due' }],
              { title: `${c.channel} forecast`, width: 560, height: 180 })))));
    } catch (err) {
      if (alive) replace(forecast, h('h2', { id: 'forecast-title', text: 'Forecast, next 7 days' }), errorBox(err));
    }
  }

  async function loadSchedules() {
    try {
      const data = await call('/api/v1/reports/schedules');
      if (!alive) return;
      replace(schedules,
        h('div', { class: 'card-head' }, h('h2', { id: 'schedules-title', text: 'Schedules' }),
          h('span', { class: 'muted', text: 'reports emailed on a cron schedule; change them through the API' })),
        data.items.length === 0 ? empty('No report is scheduled.') :
          h('table', { class: 'grid-table' },
            h('thead', {}, h('tr', {}, ['Name', 'Report', 'Format', 'Schedule', 'Recipients', 'State', 'Next run', 'Last run for'].map((x) => h('th', { scope: 'col', text: x })))),
            h('tbody', {}, data.items.map((s) => h('tr', { 'data-schedule': s.id },
              h('th', { scope: 'row', text: s.name }),
              h('td', { text: TEMPLATE_NAMES[s.template] || s.template }),
              h('td', { text: s.format.toUpperCase() }),
              h('td', {}, h('code', { text: s.cron }), h('span', { class: 'muted', text: ` ${s.timezone}` })),
              h('td', { text: num(s.recipients.length) }),
              h('td', {}, s.enabled ? badge('Enabled', 'ok') : badge('Disabled', 'neutral')),
              h('td', {}, time(s.next_run_at)),
              h('td', {}, s.last_run_for ? time(s.last_run_for) : '—'))))));
    } catch (err) {
      if (alive) replace(schedules, h('h2', { id: 'schedules-title', text: 'Schedules' }), errorBox(err));
    }
  }

  drawTabs();
  load();
  loadForecast();
  loadSchedules();
  return () => {
    alive = false;
  };
}
