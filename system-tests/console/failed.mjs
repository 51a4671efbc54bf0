// Failed work: a provider that refuses every message makes SMS sends fail;
// the console groups them (one group, the provider named, the count); once
// the provider is fixed, retrying the whole group (a background action with
// its progress) sends them all. A second group is retried by selecting its
// items.

import { assert, env, eventually, harness, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const FIRST = 4;
const SECOND = 2;

async function sms(n, tag) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    ids.push(await send({ channel: 'sms', to: `+1500555${String(1000 + i).padStart(4, '0')}`, text: `Your ${tag} appointment is confirmed.` }));
  }
  for (const id of ids) await eventually(`${id} to fail`, async () => (await notification(id)).status === 'failed');
  return ids;
}

scenario('failed', async () => {
  const { page, finish } = await open();
  step(`the SMS provider refuses every message: ${FIRST} sends fail`);
  await harness('break-provider', 'twilio');
  const ids = await sms(FIRST, 'first');

  await signIn(page);
  await page.getByRole('link', { name: 'Failed' }).click();
  await page.getByRole('heading', { level: 1, name: 'Failed work' }).waitFor();
  const row = page.locator('tr[data-group]');
  await eventually('one group of the failures', async () => (await row.count()) === 1);
  assert.equal(await row.locator('[data-field="count"]').textContent(), String(FIRST));
  const rowText = await row.textContent();
  assert.match(rowText, /sms-main/);
  assert.match(rowText, /sms/);
  for (const id of ids) assert.ok(!rowText.includes('+1500555'), 'no recipient in the group');
  await screenshot(page, 'failed');

  step('filters narrow the groups');
  await page.getByLabel('Channel').selectOption('email');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByText('Nothing failed with these filters.').waitFor();
  await page.getByLabel('Channel').selectOption('sms');
  await page.getByRole('button', { name: 'Apply' }).click();
  await row.first().waitFor();

  step('the items of the group');
  await row.getByRole('button', { name: /^Items of/ }).click();
  await eventually(`${FIRST} items`, async () => (await page.locator('tr[data-item]').count()) === FIRST);

  step('the provider is fixed; the whole group is retried');
  await harness('heal-provider', 'twilio');
  await row.getByRole('button', { name: /^Retry all/ }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Retry all' }).click();
  await page.locator('.progress-box [data-field="progress"]', { hasText: 'completed' }).waitFor();
  assert.match(await page.locator('.progress-box [data-field="progress"]').textContent(), new RegExp(`${FIRST} of ${FIRST}`));
  for (const id of ids) await eventually(`${id} to be sent`, async () => (await notification(id)).status === 'sent');
  await eventually('the group to be gone', async () => (await page.locator('tr[data-group]').count()) === 0
    || (await page.getByText('Nothing failed with these filters.').count()) === 1);

  step(`${SECOND} more fail; they are retried by selecting them`);
  await harness('break-provider', 'twilio');
  const more = await sms(SECOND, 'second');
  await harness('heal-provider', 'twilio');
  await page.getByRole('button', { name: 'Apply' }).click();
  await eventually('the new group', async () => (await page.locator('tr[data-group]').count()) === 1);
  await page.locator('tr[data-group]').getByRole('button', { name: /^Items of/ }).click();
  await eventually(`${SECOND} items`, async () => (await page.locator('tr[data-item]').count()) === SECOND);
  await page.getByRole('checkbox', { name: 'Select all shown' }).check();
  await page.locator('[data-field="selected"]', { hasText: `${SECOND} selected` }).waitFor();
  await page.getByRole('button', { name: 'Retry selected' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Retry' }).click();
  await page.locator('.toast', { hasText: `Retried ${SECOND}` }).waitFor();
  for (const id of more) await eventually(`${id} to be sent`, async () => (await notification(id)).status === 'sent');

  step('the providers page shows the config; pausing it asks first');
  await page.getByRole('link', { name: 'Providers' }).click();
  await page.getByRole('heading', { level: 1, name: 'Providers' }).waitFor();
  const provider = page.locator('tr[data-provider]').first();
  await provider.waitFor();
  assert.match(await provider.textContent(), /twilio/);
  await provider.getByRole('button', { name: /^Pause/ }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Pause provider' }).click();
  await provider.locator('.badge', { hasText: 'Paused' }).waitFor();
  await screenshot(page, 'providers');
  await provider.getByRole('button', { name: /^Resume/ }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Resume provider' }).click();
  await provider.locator('.badge', { hasText: 'Active' }).waitFor();
  void env;
  await finish();
});
