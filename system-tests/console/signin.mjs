// Sign-in: a wrong password is refused; a temporary password must be
// changed first, then the overview opens; the session survives a reload;
// sign-out returns to the sign-in form and the old token stops working.

import { assert, env, eventually, http, open, scenario, screenshot, step } from './harness.mjs';

const NEW_PASSWORD = 'Fresh-Console-Pass-7';

scenario('sign-in', async () => {
  const { page, allowErrors, finish } = await open();
  await page.goto(`${env.base}/console`);
  await page.getByRole('heading', { name: 'Operations console' }).waitFor();
  await screenshot(page, 'sign-in');

  step('a wrong password is refused with the API\'s words');
  allowErrors(/status of 401/);
  await page.getByLabel('Email').fill(env.email);
  await page.getByLabel('Password', { exact: true }).fill('Not-The-Password-1');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();

  step('the temporary password leads to the password change');
  await page.getByLabel('Password', { exact: true }).fill(env.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
  assert.equal(await page.getByLabel('Temporary password').inputValue(), env.password);
  await page.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
  await page.getByLabel('New password again').fill(`${NEW_PASSWORD}x`);
  await page.getByRole('button', { name: 'Change password and continue' }).click();
  await page.getByText('The two new passwords differ.').waitFor();
  await page.getByLabel('New password again').fill(NEW_PASSWORD);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Queues' }).waitFor();
  await page.locator('[data-queue="email"]').waitFor();

  step('the session survives a reload (kept for this tab)');
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'Queues' }).waitFor();
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('console.session')).access_token);
  await http('/api/v1/ops/queues', { token });

  step('the header names the user; sign-out ends the session');
  await page.getByText(`${env.email} · ADMIN`).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Operations console' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('console.session')), null);
  await eventually('the signed-out token to be refused', async () => {
    const resp = await fetch(`${env.base}/api/v1/ops/queues`, { headers: { authorization: `Bearer ${token}` } });
    return resp.status === 401;
  });

  step('the new password signs in');
  await page.getByLabel('Email').fill(env.email);
  await page.getByLabel('Password', { exact: true }).fill(NEW_PASSWORD);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Queues' }).waitFor();
  await finish();
});
