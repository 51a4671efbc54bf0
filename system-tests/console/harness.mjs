// What every console scenario shares: a headless Chromium page at
// 1280×800 that fails the scenario on any console error or page error,
// sign-in, calls to the API (as the admin, or as the tenant with its API
// key), bounded waits, screenshots, and requests to the Rust test that runs
// the scenario (`@@harness <verb> [arg]` on stdout, one answer line on
// stdin) for what only it can do: break or heal a fake provider, stop or
// start the worker, count the emails that arrived.
//
// Environment: CONSOLE_BASE_URL, CONSOLE_EMAIL, CONSOLE_PASSWORD,
// CONSOLE_API_KEY, CONSOLE_TENANT_ID (the API key's organisation),
// CONSOLE_SCREENSHOTS (a folder; none: no screenshots).

import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export { assert };

export const env = {
  base: must('CONSOLE_BASE_URL'),
  email: process.env.CONSOLE_EMAIL || '',
  password: process.env.CONSOLE_PASSWORD || '',
  apiKey: process.env.CONSOLE_API_KEY || '',
  tenantId: process.env.CONSOLE_TENANT_ID || '',
  shots: process.env.CONSOLE_SCREENSHOTS || '',
};

function must(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

/** How long a wait may take before the scenario fails. */
export const WAIT = 30_000;

// What the browser reported, and the pages open, for the failure report.
const errors = [];
const opened = [];

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to do something; resolves with its answer. */
export async function harness(verb, arg = '') {
  process.stdout.write(`@@harness ${verb}${arg ? ` ${arg}` : ''}\n`);
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${verb}`);
  if (value.startsWith('error ')) throw new Error(`${verb}: ${value.slice(6)}`);
  return value;
}

/** Logs a step (shown in the Rust test's output). */
export function step(text) {
  console.log(`• ${text}`);
}

/** Polls `check` until it returns a truthy value, for at most `timeout` ms. */
export async function eventually(what, check, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Calls the API with a bearer token; the parsed JSON (throws on non-2xx). */
export async function http(path, { method = 'GET', body, token, headers = {} } = {}) {
  const resp = await fetch(env.base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Sends through the tenant's API (a real 202); the notification id. */
export async function send(body, idempotencyKey) {
  const sent = await http('/api/v1/services/notifications/send', {
    method: 'POST', body, token: env.apiKey,
    headers: idempotencyKey ? { 'idempotency-key': idempotencyKey } : {},
  });
  return sent.id;
}

/** The notification as the tenant's API shows it. */
export function notification(id) {
  return http(`/api/v1/services/notifications/${id}`, { token: env.apiKey });
}

/** A signed-in admin token, for reading the operations API directly. */
export async function adminToken(email = env.email, password = env.password) {
  const s = await http('/api/v1/auth/login', { method: 'POST', body: { email, password } });
  return s.access_token;
}

/**
 * Opens a browser page on the console. Every console error and page error
 * is recorded; `finish()` fails the scenario if any was not expected with
 * `allowErrors(re, n)`.
 */
export async function open() {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: [
    '--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    // No background traffic: the machine's network is closed.
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  opened.push(page);
  const allowed = [];
  const record = (text) => {
    const i = allowed.findIndex((a) => a.re.test(text) && a.left > 0);
    if (i >= 0) allowed[i].left -= 1;
    else errors.push(text);
  };
  page.on('console', (msg) => {
    if (msg.type() === 'error') record(`console error: ${msg.text()} (${JSON.stringify(msg.location())})`);
  });
  page.on('pageerror', (err) => record(`page error: ${err.message}`));
  page.on('requestfailed', (req) => {
    const failure = req.failure();
    // Leaving a page aborts its open stream; that is no error.
    if (failure && /ERR_ABORTED/.test(failure.errorText)) return;
    record(`request failed: ${req.method()} ${req.url()} ${failure ? failure.errorText : ''}`);
  });
  page.on('request', (req) => {
    // A download is saved through a blob of this origin.
    const local = req.url().startsWith(env.base) || req.url().startsWith(`blob:${env.base}`);
    if (!local && !req.url().startsWith('data:')) record(`a request left the console's origin: ${req.url()}`);
  });
  page.setDefaultTimeout(WAIT);
  return {
    browser, page,
    /** Expects `n` errors matching `re` (e.g. the 401 of a wrong password). */
    allowErrors(re, n = 1) {
      allowed.push({ re, left: n });
    },
    async finish() {
      await browser.close();
      assert.deepEqual(errors, [], 'the browser reported errors');
    },
  };
}

/** Signs in through the console's form and waits for the overview. */
export async function signIn(page, email = env.email, password = env.password) {
  await page.goto(`${env.base}/console`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Queues' }).waitFor();
}

/** Saves a 1280×800 screenshot as `<name>.png` when screenshots are asked for. */
export async function screenshot(page, name) {
  if (!env.shots) return;
  mkdirSync(env.shots, { recursive: true });
  await page.screenshot({ path: join(env.shots, `${name}.png`) });
  step(`screenshot ${name}.png`);
}

/** The number shown in a queue card's field on the overview. */
export async function cardNumber(page, queue, field) {
  const text = await page.locator(`[data-queue="${queue}"] [data-field="${field}"]`).textContent();
  return Number(text.replace(/[^0-9]/g, ''));
}

/** Runs a scenario: exits non-zero with the error on failure. */
export async function scenario(name, body) {
  const started = Date.now();
  try {
    await body();
    console.log(`scenario ${name}: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.exit(0);
  } catch (err) {
    console.error(`scenario ${name}: FAILED\n${err.stack || err}`);
    if (errors.length) console.error(`the browser reported:\n${errors.join('\n')}`);
    for (const page of opened) {
      try {
        console.error(`the page at ${page.url()} showed:\n${(await page.locator('body').innerText()).slice(0, 3000)}`);
        const dir = env.shots || '.';
        mkdirSync(dir, { recursive: true });
        await page.screenshot({ path: join(dir, `failure-${name}.png`) });
        console.error(`screenshot ${join(dir, `failure-${name}.png`)}`);
      } catch {
        // The page is gone.
      }
    }
    process.exit(1);
  }
}
