// The console's shell: the header and navigation, hash routes
// (#/overview, #/queues/email, #/failed, #/workers, #/scheduler,
// #/providers, #/alerts, #/alerts/<id>, #/errors, #/errors/<id>, #/reports,
// #/search, #/notifications/<id>), and the sign-in gate.

import { current, logout, onSession } from './api.js';
import { h } from './dom.js';
import * as login from './views/login.js';
import * as overview from './views/overview.js';
import * as queue from './views/queue.js';
import * as failed from './views/failed.js';
import * as workers from './views/workers.js';
import * as scheduler from './views/scheduler.js';
import * as providers from './views/providers.js';
import * as search from './views/search.js';
import * as alerts from './views/alerts.js';
import * as errors from './views/errors.js';
import * as reports from './views/reports.js';

const routes = [
  { re: /^\/overview$/, view: overview, section: 'overview' },
  { re: /^\/queues\/([a-z_]+)$/, view: queue, section: 'overview' },
  { re: /^\/failed$/, view: failed, section: 'failed' },
  { re: /^\/workers$/, view: workers, section: 'workers' },
  { re: /^\/scheduler$/, view: scheduler, section: 'scheduler' },
  { re: /^\/providers$/, view: providers, section: 'providers' },
  { re: /^\/alerts(?:\/([0-9a-f-]{36}))?$/, view: alerts, section: 'alerts' },
  { re: /^\/errors(?:\/([0-9a-f-]{36}))?$/, view: errors, section: 'errors' },
  { re: /^\/reports$/, view: reports, section: 'reports' },
  { re: /^\/search$/, view: search, section: 'search' },
  { re: /^\/notifications\/([^/]+)$/, view: search, section: 'search', timeline: true },
];

const main = document.getElementById('main');
const top = document.getElementById('top');
let unmount = null;

/** Shows a short message in the corner (announced to screen readers). */
export function toast(text, tone = 'info') {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${tone}`, text });
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/overview';
  const [path, q] = raw.split('?');
  return { path, params: new URLSearchParams(q || '') };
}

function render() {
  if (unmount) {
    unmount();
    unmount = null;
  }
  const session = current();
  main.replaceChildren();
  if (!session || session.must_change_password) {
    top.hidden = true;
    unmount = login.mount(main, { session }) || null;
    return;
  }
  top.hidden = false;
  document.getElementById('who').textContent = `${session.email} · ${session.role}`;
  const { path, params } = parseHash();
  const route = routes.find((r) => r.re.test(path));
  if (!route) {
    location.replace('#/overview');
    return;
  }
  const match = path.match(route.re);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === route.section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  unmount = route.view.mount(main, { match, params, timeline: route.timeline, toast, session }) || null;
  const heading = main.querySelector('h1');
  document.title = `${heading ? heading.textContent : 'Console'} · Operations`;
}

window.addEventListener('hashchange', () => {
  render();
  main.focus({ preventScroll: true });
});

let signedIn = Boolean(current() && !current().must_change_password);
onSession((s) => {
  const now = Boolean(s && !s.must_change_password);
  if (now !== signedIn) {
    signedIn = now;
    render();
  }
});

// The skip link moves focus without touching the route in the fragment.
document.querySelector('.skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

document.getElementById('signout').addEventListener('click', async () => {
  await logout();
  location.hash = '#/overview';
  toast('Signed out');
});

render();
