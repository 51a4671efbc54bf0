// Alerts: a rule on the SMS failure rate with a short window; the provider
// refuses every message, the running scheduler's evaluation opens an alert
// and the alerts page shows it (critical, its rule, the statistics); the
// severity filter hides it; it is acknowledged and then resolved from the
// page, each after a confirmation, and its page shows the history; the
// rule is disabled and enabled again from the rules list.

import { assert, env, eventually, harness, http, notification, open, scenario, screenshot, send, signIn, step } from './harness.mjs';

const SENDS = 3;
const RULE = 'SMS failing (console test)';

scenario('alerts', async () => {
  const login = await http('/api/v1/auth/login', { method: 'POST', body: { email: env.email, password: env.password } });
  const token = login.access_token;
  const actor = `user:${login.user_id}`;
  const rule = await http('/api/v1/admin/alert-rules', {
    method: 'POST', token, body: {
      name: RULE, metric: 'failure_rate', channel: 'sms', min_events: 1, threshold: 50,
      window_secs: 300, severity: 'critical', cooldown_secs: 3600,
      escalation: [{ after_minutes: 0, channels: [{ type: 'in_app' }] }],
      organization_id: env.tenantId,
    },
  });

  step(`the SMS provider refuses every message: ${SENDS} sends fail`);
  await harness('break-provider', 'twilio');
  const ids = [];
  for (let i = 0; i < SENDS; i++) {
    ids.push(await send({ channel: 'sms', to: `+1500555${String(2000 + i)}`, text: 'Your lab results are ready.' }));
  }
  for (const id of ids) await eventually(`${id} to fail`, async () => (await notification(id)).status === 'failed');

  step('the scheduler opens an alert; the page shows it');
  const { page, finish } = await open();
  await signIn(page);
  await page.getByRole('link', { name: 'Alerts' }).click();
  await page.getByRole('heading', { level: 1, name: 'Alerts' }).waitFor();
  const mine = page.locator('tr[data-alert]', { hasText: RULE });
  await eventually('the alert of the rule', async () => (await mine.count()) === 1, 60_000);
  const [alert] = (await http(`/api/v1/admin/alerts?rule_id=${rule.id}`, { token })).items;
  assert.equal(alert.status, 'open');
  assert.equal(await mine.getAttribute('data-alert'), alert.id);
  const rowText = await mine.textContent();
  assert.match(rowText, /Critical/);
  assert.match(rowText, /Open/);
  assert.match(rowText, /sms.*100\.0% of sends failed over the last 5 min/);
  assert.ok(!rowText.includes('+1500555'), 'no recipient in the alert');
  await eventually('the statistics to count it as the API does', async () => {
    const stats = await http('/api/v1/admin/alerts/statistics', { token });
    const shown = await page.locator('[data-field="open_critical"]').textContent();
    return stats.open_by_severity.critical >= 1 && shown === String(stats.open_by_severity.critical);
  });
  const ruleRow = page.locator(`tr[data-rule="${rule.id}"]`);
  assert.match(await ruleRow.textContent(), /Enabled/);
  await screenshot(page, 'alerts');

  step('the severity filter hides it');
  await page.getByRole('combobox', { name: /^Severity/ }).selectOption('info');
  await page.getByRole('button', { name: 'Apply' }).click();
  await eventually('the critical alert to be filtered out', async () => (await mine.count()) === 0);
  await page.getByRole('combobox', { name: /^Severity/ }).selectOption('critical');
  await page.getByRole('button', { name: 'Apply' }).click();
  await mine.waitFor();

  step('acknowledge it, after a confirmation that Escape cancels');
  await mine.getByRole('button', { name: /^Acknowledge/ }).click();
  const dialog = page.getByRole('dialog', { name: 'Acknowledge this alert?' });
  await dialog.waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  assert.equal((await http(`/api/v1/admin/alerts/${alert.id}`, { token })).alert.status, 'open', 'Escape did nothing');
  await mine.getByRole('button', { name: /^Acknowledge/ }).click();
  await dialog.getByRole('button', { name: 'Acknowledge' }).click();
  await mine.locator('[data-field="status"]', { hasText: 'Acknowledged' }).waitFor();
  const acked = (await http(`/api/v1/admin/alerts/${alert.id}`, { token })).alert;
  assert.equal(acked.status, 'acknowledged');
  assert.equal(acked.acknowledged_by, actor);
  assert.equal(await mine.getByRole('button', { name: /^Acknowledge/ }).count(), 0, 'no second acknowledgement');

  step('its page shows the history; resolve it there');
  await mine.getByRole('link').click();
  await page.getByRole('heading', { level: 1, name: 'Alert' }).waitFor();
  await page.locator('[data-event="opened"]').waitFor();
  const acknowledged = page.locator('[data-event="acknowledged"]');
  await acknowledged.waitFor();
  assert.ok((await acknowledged.textContent()).includes(actor), 'who acknowledged it');
  assert.match(await page.locator('[data-event="opened"]').textContent(), /in_app/);
  await page.getByRole('button', { name: /^Resolve/ }).click();
  await page.getByRole('dialog', { name: 'Resolve this alert?' }).getByRole('button', { name: 'Resolve' }).click();
  await page.locator('[data-field="status"]', { hasText: 'Resolved' }).waitFor();
  await page.locator('[data-event="resolved"]').waitFor();
  assert.equal((await http(`/api/v1/admin/alerts/${alert.id}`, { token })).alert.status, 'resolved');
  assert.equal(await page.getByRole('button', { name: /^Resolve/ }).count(), 0);
  await screenshot(page, 'alert');

  step('the rule is disabled and enabled again');
  await page.getByRole('link', { name: 'Alerts' }).first().click();
  await ruleRow.waitFor();
  await ruleRow.getByRole('button', { name: `Disable ${RULE}` }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Disable rule' }).click();
  await ruleRow.locator('[data-field="enabled"]', { hasText: 'Disabled' }).waitFor();
  const stored = await http(`/api/v1/admin/alert-rules/${rule.id}`, { token });
  assert.equal(stored.enabled, false);
  assert.equal(stored.threshold, 50, 'the rest of the rule is kept');
  assert.equal(stored.min_events, 1);
  assert.deepEqual(stored.escalation, rule.escalation);
  await ruleRow.getByRole('button', { name: `Enable ${RULE}` }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Enable rule' }).click();
  await ruleRow.locator('[data-field="enabled"]', { hasText: 'Enabled' }).waitFor();
  assert.equal((await http(`/api/v1/admin/alert-rules/${rule.id}`, { token })).enabled, true);
  await finish();
});
