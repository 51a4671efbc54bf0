// Error tracking: a provider that refuses every message makes SMS sends
// fail; the errors page shows their group (reason, class, provider,
// channel, occurrences as the API counts them) and the statistics by
// class; a class filter hides it. Once the provider is fixed and the sends
// retried, the group counts them as recoveries and its page lists them.

import { assert, adminToken, eventually, harness, http, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const SENDS = 3;

scenario('errors', async () => {
  const token = await adminToken();
  step(`the SMS provider refuses every message: ${SENDS} sends fail`);
  await harness('break-provider', 'twilio');
  const ids = [];
  for (let i = 0; i < SENDS; i++) {
    ids.push(await send({ channel: 'sms', to: `+1500555${String(3000 + i)}`, text: 'Your prescription is ready for pickup.' }));
  }
  for (const id of ids) await eventually(`${id} to fail`, async () => (await notification(id)).status === 'failed');
  const groups = (await http('/api/v1/errors?kind=delivery&channel=sms', { token })).items;
  assert.equal(groups.length, 1, 'one group for one cause');
  const group = groups[0];
  assert.ok(group.occurrences >= SENDS, `every failed send counted: ${group.occurrences}`);

  const { page, finish } = await open();
  await signIn(page);
  await page.getByRole('link', { name: 'Errors' }).click();
  await page.getByRole('heading', { level: 1, name: 'Errors' }).waitFor();
  const row = page.locator(`tr[data-error="${group.id}"]`);
  await row.waitFor();
  assert.equal(await row.locator('[data-field="occurrences"]').textContent(), String(group.occurrences));
  assert.equal(await row.locator('[data-field="recoveries"]').textContent(), '0');
  const text = await row.textContent();
  for (const part of [group.reason, group.class.replace('_', ' '), 'delivery', 'sms', group.provider].filter(Boolean)) assert.ok(text.includes(part), `${part} in ${text}`);
  assert.ok(!text.includes('+1500555'), 'no recipient in the group');
  const byClass = page.locator(`[data-counts="class"] tr[data-name="${group.class}"] [data-field="occurrences"]`);
  assert.equal(await byClass.textContent(), String(group.occurrences));
  assert.equal(await page.locator('[data-counts="class"] tbody tr').count(), 7, 'every class is listed');

  step('a class filter hides the group');
  const other = group.class === 'database' ? 'network' : 'database';
  await page.getByLabel('Class').selectOption(other);
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByText('No error group matches these filters.').waitFor();
  await page.getByLabel('Class').selectOption(group.class);
  await page.getByRole('button', { name: 'Apply' }).click();
  await row.waitFor();

  step('the provider is fixed and the sends retried: they recover');
  await harness('heal-provider', 'twilio');
  await http('/api/v1/ops/failed/retry', { method: 'POST', token, body: { ids: ids.map((id) => ({ kind: 'notification', id })) } });
  for (const id of ids) await eventually(`${id} to be sent`, async () => (await notification(id)).status === 'sent');
  await eventually('the recoveries to be counted', async () =>
    (await http(`/api/v1/errors/${group.id}`, { token })).group.recoveries === SENDS);
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'Errors' }).waitFor();
  await row.waitFor();
  assert.equal(await row.locator('[data-field="recoveries"]').textContent(), String(SENDS));
  await screenshot(page, 'errors');

  step("the group's page lists the recovered notifications");
  await row.getByRole('link').click();
  await page.getByRole('heading', { level: 1, name: 'Error group' }).waitFor();
  await eventually(`${SENDS} recoveries`, async () => (await page.locator('tr[data-recovery]').count()) === SENDS);
  const shown = await page.locator('tr[data-recovery]').evaluateAll((rows) => rows.map((r) => r.dataset.recovery));
  assert.deepEqual([...shown].sort(), [...ids].sort());
  assert.equal(await page.locator('dd[data-field="recoveries"]').textContent(), String(SENDS));
  assert.equal(await page.locator('dd[data-field="occurrences"]').textContent(), String(group.occurrences));
  assert.ok((await page.locator('[data-field="samples"] a').count()) >= 1, 'samples link to their timelines');
  await screenshot(page, 'error-group');

  step('a recovered notification opens its timeline');
  await page.locator(`tr[data-recovery="${ids[0]}"]`).getByRole('link').click();
  await page.waitForURL(new RegExp(`#/notifications/${ids[0]}$`));
  await finish();
});
