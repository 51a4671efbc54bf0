// Overview: the email card's counters follow real sends. With the worker
// stopped, sends wait (the card's waiting count rises); once it runs again
// they are sent (waiting back to 0, the last minute's sent count up), all
// seen live in the browser. Then the queue's page and its history chart.

import { assert, cardNumber, eventually, harness, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const SENDS = 6;

scenario('overview', async () => {
  const { page, finish } = await open();
  await signIn(page);
  await page.locator('[data-queue="email"]').waitFor();
  assert.equal(await cardNumber(page, 'email', 'waiting'), 0);
  assert.equal(await cardNumber(page, 'email', 'sent_1m'), 0);
  await page.locator('.live .badge', { hasText: 'Live' }).waitFor();

  step(`with the worker stopped, ${SENDS} sends wait`);
  await harness('stop-worker');
  for (let i = 0; i < SENDS; i++) {
    await send({ to: `console.overview.${i}@example.org`, subject: 'Appointment reminder', text: 'See you on Monday.' });
  }
  await eventually(`the email card to show ${SENDS} waiting`, async () => (await cardNumber(page, 'email', 'waiting')) === SENDS);
  assert.equal(await cardNumber(page, 'email', 'sent_1m'), 0);

  step('with the worker back, they are sent');
  await harness('start-worker');
  await eventually('the email card to show them sent', async () =>
    (await cardNumber(page, 'email', 'sent_1m')) === SENDS && (await cardNumber(page, 'email', 'waiting')) === 0);
  assert.equal(Number(await harness('smtp-count')), SENDS);
  await eventually('the sparkline to have points', async () => (await page.locator('[data-queue="email"] .spark-line').count()) === 1);
  await screenshot(page, 'overview');

  step('the queue page shows the history of the sends');
  await page.getByRole('link', { name: 'email', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Queue email' }).waitFor();
  await page.locator('svg.chart path.line').first().waitFor();
  const label = await page.locator('svg.chart').getAttribute('aria-label');
  assert.match(label, new RegExp(`Sent ${SENDS}\\b`), label);
  step('the chart reads out a step by keyboard');
  await page.locator('svg.chart').focus();
  await page.keyboard.press('End');
  await page.locator('.readout', { hasText: 'Sent' }).waitFor();
  await page.getByRole('button', { name: '24 hours' }).click();
  await page.locator('svg.chart[aria-label*="over 24h"]').waitFor();
  await page.getByRole('button', { name: '1 hour' }).click();
  await page.locator('svg.chart[aria-label*="over 1h"]').waitFor();
  await screenshot(page, 'queue');
  await finish();
});
