// Pausing a queue from its page: the dialog is keyboard-usable (focus
// inside, Escape closes it and gives focus back); once paused, sends wait
// (none reaches the SMTP server, the waiting count shows them); resumed,
// they are sent.

import { assert, env, eventually, harness, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const SENDS = 3;

scenario('pause', async () => {
  const { page, finish } = await open();
  await signIn(page);
  await page.goto(`${env.base}/console#/queues/email`);
  await page.getByRole('heading', { level: 1, name: 'Queue email' }).waitFor();

  step('the pause dialog traps focus and closes with Escape');
  const pauseButton = page.getByRole('button', { name: 'Pause queue' });
  await pauseButton.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Pause email?' });
  await dialog.waitFor();
  assert.ok(await dialog.evaluate((d) => d.contains(document.activeElement)), 'focus is in the dialog');
  for (let i = 0; i < 5; i++) {
    await page.keyboard.press('Tab');
    assert.ok(await dialog.evaluate((d) => d.contains(document.activeElement)), 'Tab stays in the dialog');
  }
  await page.keyboard.press('Shift+Tab');
  assert.ok(await dialog.evaluate((d) => d.contains(document.activeElement)), 'Shift+Tab stays in the dialog');
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  assert.ok(await pauseButton.evaluate((b) => b === document.activeElement), 'focus is back on the button');

  step('pause with a reason');
  await page.keyboard.press('Enter');
  await page.getByLabel('Reason (optional)').fill('provider maintenance');
  await screenshot(page, 'pause-dialog');
  await page.getByRole('dialog').getByRole('button', { name: 'Pause queue' }).click();
  await page.getByRole('button', { name: 'Resume queue' }).waitFor();
  await page.locator('[data-field="paused"]', { hasText: 'provider maintenance' }).waitFor();

  step(`${SENDS} sends wait while the queue is paused`);
  const ids = [];
  for (let i = 0; i < SENDS; i++) {
    ids.push(await send({ to: `console.pause.${i}@example.org`, subject: 'Clinic closed Friday', text: 'The clinic is closed on Friday.' }));
  }
  await eventually(`the page to show ${SENDS} waiting`, async () =>
    Number((await page.locator('[data-field="waiting"]').textContent()).replace(/\D/g, '')) === SENDS);
  // The worker polls more often than every 2 s: give it a few of the
  // page's refreshes to (wrongly) take them.
  for (let i = 0; i < 3; i++) {
    const before = await page.locator('[data-field="waiting"]').textContent();
    await page.waitForResponse((r) => r.url().endsWith('/api/v1/ops/queues/email'));
    assert.equal(Number(before.replace(/\D/g, '')), SENDS);
  }
  assert.equal(Number(await harness('smtp-count')), 0, 'nothing was sent while paused');
  for (const id of ids) assert.notEqual((await notification(id)).status, 'sent');
  await page.goto(`${env.base}/console#/overview`);
  await page.locator('[data-queue="email"] .badge', { hasText: 'Paused' }).waitFor();
  await screenshot(page, 'overview-paused');

  step('resume: they are sent');
  await page.goto(`${env.base}/console#/queues/email`);
  await page.getByRole('button', { name: 'Resume queue' }).click();
  await page.getByRole('dialog', { name: 'Resume email?' }).getByRole('button', { name: 'Resume queue' }).click();
  await page.getByRole('button', { name: 'Pause queue' }).waitFor();
  await eventually('the sends to arrive', async () => Number(await harness('smtp-count')) === SENDS);
  for (const id of ids) await eventually(`${id} to be sent`, async () => (await notification(id)).status === 'sent');
  await eventually('the page to show none waiting', async () =>
    Number((await page.locator('[data-field="waiting"]').textContent()).replace(/\D/g, '')) === 0);
  await finish();
});
