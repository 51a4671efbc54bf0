// Small DOM helpers: element builders (text is always set as text, never
// parsed as HTML), number and time formatting.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key === 'class') el.setAttribute('class', value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'style') {
      throw new Error('inline styles are refused by the page policy');
    } else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('button', {class: 'x', onclick}, 'Label'). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return build(el, {}, children);
}

const numberFormat = new Intl.NumberFormat('en-GB');

/** 12,345; '—' for null. */
export function num(n) {
  if (n === null || n === undefined) return '—';
  return numberFormat.format(n);
}

/** 12 ms, 1.4 s, '—' for null. */
export function ms(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  return `${(n / 60000).toFixed(1)} min`;
}

/** "3 min ago", "in 20 s"; '—' for null. */
export function ago(iso, now = Date.now()) {
  if (!iso) return '—';
  const diff = Math.round((now - Date.parse(iso)) / 1000);
  const abs = Math.abs(diff);
  let text;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

/** 2026-12-05 03:04:05 UTC; '—' for null. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** A <time> element showing a relative time with the exact one as title. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted', text: '—' });
  return h('time', { datetime: iso, title: when(iso), text: ago(iso) });
}

/** A small coloured label. */
export function badge(text, tone = 'neutral') {
  return h('span', { class: `badge badge-${tone}`, text });
}

/** A message shown where data could not be loaded. */
export function errorBox(err) {
  return h('div', { class: 'error-box', role: 'alert' },
    h('strong', { text: err.title || 'Something went wrong' }),
    h('p', { text: err.message || String(err) }));
}

/** An empty-state message. */
export function empty(text) {
  return h('p', { class: 'empty', text });
}
