// Search: a sent notification is found by its id and by its idempotency
// key, and its timeline shows it accepted and sent, with no recipient
// address and no body. The workers and scheduler pages list the running
// in-process worker and the cron entries.

import { assert, env, eventually, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const TO = 'console.search.patient@example.org';
const TEXT = 'Your biopsy results are ready.';

scenario('search', async () => {
  const key = `console-search-${Date.now()}`;
  const id = await send({ to: TO, subject: 'Results', text: TEXT }, key);
  await eventually('the send to be sent', async () => (await notification(id)).status === 'sent');

  const { page, finish } = await open();
  await signIn(page);
  step('search by the idempotency key');
  await page.getByRole('link', { name: 'Search' }).click();
  await page.getByRole('heading', { level: 1, name: 'Search' }).waitFor();
  await page.getByRole('searchbox').fill(key);
  await page.keyboard.press('Enter');
  const match = page.locator(`tr[data-match="${id}"]`);
  await match.waitFor();
  assert.match(await match.textContent(), /notification/);

  step('search by the id, open the timeline');
  await page.getByRole('searchbox').fill(id);
  await page.getByRole('button', { name: 'Search' }).click();
  await match.getByRole('link').click();
  await page.getByRole('heading', { level: 1, name: 'Notification timeline' }).waitFor();
  await page.locator('.timeline li').first().waitFor();
  const kinds = await page.locator('.timeline li').evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.equal(kinds[0], 'accepted', `events: ${kinds}`);
  assert.ok(kinds.length >= 2, `events: ${kinds}`);
  await page.locator('[data-field="id"]', { hasText: id }).waitFor();
  const text = await page.locator('main').textContent();
  assert.ok(/sent/.test(text), 'the status is shown');
  assert.ok(!text.includes(TO), 'no recipient address on the page');
  assert.ok(!text.includes(TEXT), 'no body on the page');
  await screenshot(page, 'timeline');

  step('workers and scheduler');
  await page.getByRole('link', { name: 'Workers' }).click();
  await page.getByRole('heading', { level: 1, name: 'Workers' }).waitFor();
  await eventually('a live worker', async () => (await page.locator('tr[data-worker]').count()) >= 1);
  await screenshot(page, 'workers');
  await page.getByRole('link', { name: 'Scheduler' }).click();
  await page.getByRole('heading', { level: 1, name: 'Scheduler' }).waitFor();
  await eventually('the cron entries', async () => (await page.locator('tr[data-entry]').count()) >= 1);
  await screenshot(page, 'scheduler');
  void env;
  await finish();
});
