// Delivery reports: SMS sends, some refused by the provider, appear in the
// daily, weekly and monthly reports with the totals the platform sent
// (accepted, sent, failed, the failure rate), in the per-day chart and the
// per-channel breakdown; the CSV and XLSX downloads carry the same totals;
// the forecast shows what the API forecasts and the schedules list shows a
// schedule made through the API.

import { readFileSync } from 'node:fs';
import { assert, env, eventually, harness, http, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const SENT = 4;
const FAILED = 2;
const ACCEPTED = SENT + FAILED;

async function sms(n, from, status) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    ids.push(await send({ channel: 'sms', to: `+1500555${String(from + i)}`, text: 'Your appointment is tomorrow at 9:00.' }));
  }
  for (const id of ids) await eventually(`${id} to be ${status}`, async () => (await notification(id)).status === status);
}

const field = (page, name) => page.locator(`[data-template] [data-field="${name}"]`).textContent();

scenario('reports', async () => {
  step(`${SENT} SMS are sent, then the provider refuses ${FAILED}`);
  await sms(SENT, 4000, 'sent');
  await harness('break-provider', 'twilio');
  await sms(FAILED, 5000, 'failed');
  await harness('heal-provider', 'twilio');

  const login = await http('/api/v1/auth/login', { method: 'POST', body: { email: env.email, password: env.password } });
  const schedule = await http('/api/v1/reports/schedules', {
    method: 'POST', token: login.access_token, body: {
      name: 'Monday performance', template: 'weekly_performance', format: 'csv',
      cron: '0 7 * * MON', timezone: 'America/New_York', recipients: [login.user_id],
    },
  });

  const { page, finish } = await open();
  await signIn(page);
  await page.getByRole('link', { name: 'Reports' }).click();
  await page.getByRole('heading', { level: 1, name: 'Reports' }).waitFor();

  step('the daily report counts what was sent (the rollups trail by about a second)');
  await eventually('the daily totals', async () => {
    if ((await field(page, 'accepted')) === String(ACCEPTED)) return true;
    await page.getByRole('button', { name: 'Refresh' }).click();
    return false;
  });
  assert.equal(await field(page, 'sent'), String(SENT));
  assert.equal(await field(page, 'failed'), String(FAILED));
  assert.equal(await field(page, 'failure_rate'), `${((100 * FAILED) / ACCEPTED).toFixed(1)} %`);
  const smsRow = page.locator('[data-slices="channel"] tr[data-key="sms"]');
  assert.equal(await smsRow.locator('[data-field="accepted"]').textContent(), String(ACCEPTED));
  assert.equal(await smsRow.locator('[data-field="sent"]').textContent(), String(SENT));
  assert.equal(await smsRow.locator('[data-field="failed"]').textContent(), String(FAILED));
  const chart = page.getByRole('img', { name: /^sent and failed per UTC day/ });
  assert.match(await chart.getAttribute('aria-label'), new RegExp(`totals Sent ${SENT}, Failed ${FAILED}$`));
  step('the chart reads one day aloud from the keyboard');
  await chart.focus();
  await page.keyboard.press('End');
  assert.match(await page.locator('.readout').first().textContent(), new RegExp(`Sent ${SENT}, Failed ${FAILED}`));
  assert.ok((await page.locator('[data-slices="busiest"] tbody tr').count()) >= 1, 'the busiest hours');

  step('the forecast shows the channels the API forecasts; the schedule is listed');
  // The forecast reads whole days before today: sends of today alone give
  // no channel to forecast yet.
  const forecast = await http('/api/v1/reports/forecast', { token: login.access_token });
  const channels = forecast.channels.map((c) => c.channel);
  if (channels.length === 0) await page.getByText('No channel has history to forecast from.').waitFor();
  else await page.locator('figure.forecast').first().waitFor();
  assert.deepEqual(await page.locator('figure.forecast').evaluateAll((fs) => fs.map((f) => f.dataset.channel)), channels);
  const row = page.locator(`tr[data-schedule="${schedule.id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /Monday performance.*Weekly.*CSV.*0 7 \* \* MON/);
  await screenshot(page, 'reports');

  for (const [tab, template] of [['Weekly', 'weekly_performance'], ['Monthly', 'monthly_comprehensive']]) {
    step(`the ${tab.toLowerCase()} report has the same totals`);
    await page.getByRole('button', { name: tab, exact: true }).click();
    await page.locator(`[data-template="${template}"]`).waitFor();
    assert.equal(await page.getByRole('button', { name: tab, exact: true }).getAttribute('aria-pressed'), 'true');
    assert.equal(await field(page, 'accepted'), String(ACCEPTED));
    assert.equal(await field(page, 'sent'), String(SENT));
    assert.equal(await field(page, 'failed'), String(FAILED));
  }

  step('the CSV download carries the same totals');
  const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
  assert.match(csv.suggestedFilename(), /\.csv$/);
  const lines = readFileSync(await csv.path(), 'utf8').split(/\r?\n/);
  const header = lines[0].split(',');
  const total = lines.find((l) => l.startsWith('total,')).split(',');
  const col = (name) => total[header.indexOf(name)];
  assert.deepEqual([col('accepted'), col('sent'), col('failed')], [String(ACCEPTED), String(SENT), String(FAILED)]);
  await page.locator('.toast', { hasText: csv.suggestedFilename() }).waitFor();

  step('the XLSX download is a workbook');
  const [xlsx] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download XLSX' }).click()]);
  assert.match(xlsx.suggestedFilename(), /\.xlsx$/);
  const book = readFileSync(await xlsx.path());
  assert.equal(book.subarray(0, 2).toString(), 'PK', 'a zip container');
  await finish();
});
