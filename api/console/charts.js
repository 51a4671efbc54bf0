// Charts drawn as SVG: a sparkline for the queue cards, a stacked bar for a
// queue's depth, and a time chart (area and lines) for throughput history.
// Each carries an aria-label that says in words what it shows.

import { h, s, num } from './dom.js';

/** A step for four gridlines that reach at least `v`, in whole, round
 * numbers (1, 2, 5, 10, 20, 50, …). */
function niceStep(v) {
  const raw = Math.max(v, 1) / 4;
  if (raw <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function linePath(values, x, y) {
  return values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('');
}

/** A small line with the area under it; `values` oldest first. */
export function sparkline(values, { width = 160, height = 36, tone = 'sent', label } = {}) {
  const max = Math.max(1, ...values);
  const n = Math.max(values.length, 2);
  const x = (i) => (i / (n - 1)) * (width - 2) + 1;
  const y = (v) => height - 2 - (v / max) * (height - 4);
  const svg = s('svg', {
    class: `spark tone-${tone}`, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': label || `trend of ${values.length} points, highest ${num(max)}`,
    preserveAspectRatio: 'none',
  });
  if (values.length < 2) {
    svg.append(s('line', { x1: 0, x2: width, y1: height - 2, y2: height - 2, class: 'spark-base' }));
    return svg;
  }
  const line = linePath(values, x, y);
  svg.append(
    s('path', { d: `${line}L${x(values.length - 1)},${height}L${x(0)},${height}Z`, class: 'spark-area' }),
    s('path', { d: line, class: 'spark-line' }),
  );
  return svg;
}

/** One horizontal bar split into parts ([{name, value, tone}]), with a legend. */
export function stackedBar(parts, { label = 'depth' } = {}) {
  const total = parts.reduce((a, p) => a + (p.value || 0), 0);
  const width = 300;
  const bar = s('svg', {
    class: 'stack', viewBox: `0 0 ${width} 10`, preserveAspectRatio: 'none', role: 'img',
    'aria-label': `${label}: ${parts.map((p) => `${p.name} ${num(p.value)}`).join(', ')}`,
  });
  bar.append(s('rect', { x: 0, y: 0, width, height: 10, class: 'stack-bg', rx: 3 }));
  let at = 0;
  for (const p of parts) {
    if (!p.value || !total) continue;
    const w = (p.value / total) * width;
    bar.append(s('rect', { x: at, y: 0, width: Math.max(w, 1.5), height: 10, class: `fill-${p.tone}` },
      s('title', { text: `${p.name}: ${num(p.value)}` })));
    at += w;
  }
  return bar;
}

function tickTime(d, step) {
  const iso = new Date(d).toISOString();
  if (step >= 3600) return `${iso.slice(5, 10)} ${iso.slice(11, 13)}h`;
  return iso.slice(11, 16);
}

/**
 * A time chart: `points` [{at, ...}] oldest first, `series` [{key, name,
 * tone, area}], every `step` seconds. Hovering or moving the keyboard focus
 * along it shows one point's values.
 */
export function timeChart(points, series, { step = 60, title = 'throughput' } = {}) {
  const W = 1100, H = 250, L = 52, R = 12, T = 12, B = 30;
  const iw = W - L - R, ih = H - T - B;
  const n = points.length;
  const highest = Math.max(0, ...points.flatMap((p) => series.map((sr) => p[sr.key] || 0)));
  const stepY = niceStep(highest);
  const max = stepY * 4;
  const x = (i) => L + (n <= 1 ? iw / 2 : (i / (n - 1)) * iw);
  const y = (v) => T + ih - (v / max) * ih;
  const totals = series.map((sr) => `${sr.name} ${num(points.reduce((a, p) => a + (p[sr.key] || 0), 0))}`);
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `${title}: ${n} points of ${step} s; totals ${totals.join(', ')}; highest ${num(highest)} per step`,
  });
  for (let k = 0; k <= 4; k++) {
    const v = stepY * k;
    svg.append(
      s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: L - 8, y: y(v) + 4, class: 'axis', 'text-anchor': 'end', text: num(v) }),
    );
  }
  const ticks = Math.min(6, n);
  for (let k = 0; k < ticks && n > 1; k++) {
    const i = Math.round((k / (ticks - 1)) * (n - 1));
    svg.append(s('text', {
      x: x(i), y: H - 8, class: 'axis', 'text-anchor': k === 0 ? 'start' : k === ticks - 1 ? 'end' : 'middle',
      text: tickTime(points[i].at, step),
    }));
  }
  if (n >= 2) {
    for (const sr of series) {
      const values = points.map((p) => p[sr.key] || 0);
      const line = linePath(values, x, y);
      if (sr.area) {
        svg.append(s('path', { d: `${line}L${x(n - 1)},${y(0)}L${x(0)},${y(0)}Z`, class: `area tone-${sr.tone}` }));
      }
      svg.append(s('path', { d: line, class: `line tone-${sr.tone}` }));
    }
  }
  const cursor = s('line', { x1: 0, x2: 0, y1: T, y2: T + ih, class: 'cursor', visibility: 'hidden' });
  svg.append(cursor);
  const readout = h('p', { class: 'readout muted', 'aria-live': 'polite', text: 'Point at the chart, or focus it and use ← →, to read one step.' });
  let at = n - 1;
  const show = (i) => {
    if (!n) return;
    at = Math.max(0, Math.min(n - 1, i));
    const p = points[at];
    cursor.setAttribute('x1', x(at));
    cursor.setAttribute('x2', x(at));
    cursor.setAttribute('visibility', 'visible');
    readout.textContent = `${new Date(p.at).toISOString().slice(0, 16).replace('T', ' ')} UTC — `
      + series.map((sr) => `${sr.name} ${num(p[sr.key] || 0)}`).join(', ');
  };
  svg.addEventListener('mousemove', (e) => {
    const box = svg.getBoundingClientRect();
    const px = ((e.clientX - box.left) / box.width) * W;
    show(Math.round(((px - L) / iw) * (n - 1)));
  });
  svg.setAttribute('tabindex', '0');
  svg.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') { show(at - 1); e.preventDefault(); }
    if (e.key === 'ArrowRight') { show(at + 1); e.preventDefault(); }
    if (e.key === 'Home') { show(0); e.preventDefault(); }
    if (e.key === 'End') { show(n - 1); e.preventDefault(); }
  });
  const legend = h('ul', { class: 'legend' },
    series.map((sr) => h('li', {}, h('span', { class: `swatch fill-${sr.tone}`, 'aria-hidden': 'true' }), sr.name)));
  return h('figure', { class: 'chart-box' }, svg, legend, readout);
}

/** A colour key: [{name, tone}]. */
export function legend(items) {
  return h('ul', { class: 'legend' },
    items.map((it) => h('li', {}, h('span', { class: `swatch fill-${it.tone}`, 'aria-hidden': 'true' }), it.name)));
}

/**
 * Vertical bars, one group per point: `points` [{label, title?, ...}],
 * `series` [{key, name, tone}]. Hovering or moving the keyboard focus along
 * it shows one point's values; the aria-label says the totals.
 */
export function barChart(points, series, { title = 'volume', height = 220, width = 1100, unit = '' } = {}) {
  const W = width, H = height, L = 52, R = 12, T = 12, B = 30;
  const iw = W - L - R, ih = H - T - B;
  const n = points.length;
  const highest = Math.max(0, ...points.flatMap((p) => series.map((sr) => p[sr.key] || 0)));
  const stepY = niceStep(highest);
  const max = stepY * 4;
  const y = (v) => T + ih - (v / max) * ih;
  const slot = iw / Math.max(n, 1);
  const gap = Math.min(24, slot * 0.25);
  const bw = Math.min(48, (slot - gap) / Math.max(series.length, 1));
  const fmt = (v) => (Number.isInteger(v) ? num(v) : v.toFixed(1));
  const totals = series.map((sr) => `${sr.name} ${fmt(points.reduce((a, p) => a + (p[sr.key] || 0), 0))}`);
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', tabindex: '0',
    'aria-label': `${title}: ${n} ${n === 1 ? 'bar group' : 'bar groups'}; totals ${totals.join(', ')}${unit}`,
  });
  for (let k = 0; k <= 4; k++) {
    const v = stepY * k;
    svg.append(
      s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: L - 8, y: y(v) + 4, class: 'axis', 'text-anchor': 'end', text: num(v) }),
    );
  }
  const every = Math.max(1, Math.ceil(n / 12));
  const cursor = s('rect', { x: 0, y: T, width: slot, height: ih, class: 'bar-cursor', visibility: 'hidden' });
  svg.append(cursor);
  points.forEach((p, i) => {
    const x0 = L + i * slot + (slot - bw * series.length) / 2;
    series.forEach((sr, j) => {
      const v = p[sr.key] || 0;
      const top = y(v);
      svg.append(s('rect', {
        x: x0 + j * bw, y: top, width: Math.max(bw - 2, 1), height: Math.max(T + ih - top, v > 0 ? 1 : 0), class: `bar fill-${sr.tone}`,
      }, s('title', { text: `${p.title || p.label} — ${sr.name} ${fmt(v)}` })));
    });
    if (i % every === 0) {
      svg.append(s('text', { x: L + i * slot + slot / 2, y: H - 8, class: 'axis', 'text-anchor': 'middle', text: p.label }));
    }
  });
  const readout = h('p', { class: 'readout muted', 'aria-live': 'polite', text: 'Point at the chart, or focus it and use ← →, to read one bar group.' });
  let at = n - 1;
  const show = (i) => {
    if (!n) return;
    at = Math.max(0, Math.min(n - 1, i));
    const p = points[at];
    cursor.setAttribute('x', L + at * slot);
    cursor.setAttribute('visibility', 'visible');
    readout.textContent = `${p.title || p.label} — ${series.map((sr) => `${sr.name} ${fmt(p[sr.key] || 0)}`).join(', ')}`;
  };
  svg.addEventListener('mousemove', (e) => {
    const box = svg.getBoundingClientRect();
    const px = ((e.clientX - box.left) / box.width) * W;
    show(Math.floor((px - L) / slot));
  });
  svg.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') { show(at - 1); e.preventDefault(); }
    if (e.key === 'ArrowRight') { show(at + 1); e.preventDefault(); }
    if (e.key === 'Home') { show(0); e.preventDefault(); }
    if (e.key === 'End') { show(n - 1); e.preventDefault(); }
  });
  return h('figure', { class: 'chart-box' }, svg, legend(series), readout);
}

/** A small horizontal bar for a table cell: `parts` [{value, tone}] laid
 * end to end against `max` (decorative: the cell's number says it). */
export function meter(parts, max, { width = 100 } = {}) {
  const bar = s('svg', { class: 'count-bar', viewBox: `0 0 ${width} 8`, preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    s('rect', { x: 0, y: 0, width, height: 8, rx: 2, class: 'stack-bg' }));
  let at = 0;
  for (const p of parts) {
    if (!p.value || !max) continue;
    const w = Math.max(2, (p.value / max) * width);
    bar.append(s('rect', { x: at, y: 0, width: w, height: 8, rx: 2, class: `fill-${p.tone}` }));
    at += w;
  }
  return bar;
}
