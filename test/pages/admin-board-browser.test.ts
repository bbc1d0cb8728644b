import t from 'tap';
import { freePort, startTestErrand, testEnv } from '../support/helpers.js';
import { launchBrowser, saveScreenshot } from '../support/browser.js';

// A smoke test of the real Bull Board UI operators use: it loads in Chromium behind HTTP Basic and lists the queues.
const ADMIN_TOKEN = 'board-test-admin-token-0123456789abcdef';
const port = await freePort();
const baseUrl = `http://127.0.0.1:${port}`;
const errand = await startTestErrand(t, testEnv(t, { ADMIN_TOKEN, PUBLIC_BASE_URL: baseUrl }));
await errand.app.listen({ port, host: '127.0.0.1' });
const browser = await launchBrowser(t);

t.test('without the password the board answers 401 and asks for Basic credentials', async (t) => {
  // Over plain HTTP: headless Chromium turns an unanswered Basic challenge into a navigation error, not a page.
  const res = await fetch(`${baseUrl}/admin/board`);
  await res.body?.cancel();
  t.equal(res.status, 401);
  t.match(res.headers.get('www-authenticate'), /^Basic /);
  const wrong = await fetch(`${baseUrl}/admin/board`, { headers: { authorization: `Basic ${Buffer.from('operator:wrong').toString('base64')}` } });
  await wrong.body?.cancel();
  t.equal(wrong.status, 401, 'a wrong password too');
});

t.test('with the admin password (any user) the board loads and lists the email queue', async (t) => {
  const context = await browser.newContext({ httpCredentials: { username: 'operator', password: ADMIN_TOKEN }, viewport: { width: 1280, height: 800 } });
  t.teardown(() => context.close());
  const page = await context.newPage();
  const failedRequests: string[] = [];
  page.on('response', (response) => {
    if (response.status() >= 400) failedRequests.push(`${response.status()} ${new URL(response.url()).pathname}`);
  });
  const res = await page.goto(`${baseUrl}/admin/board`);
  t.equal(res?.status(), 200);
  // The UI is a client-side app: the queue list appears once its scripts have fetched the queues from the board's API.
  const emailQueue = page.getByRole('link', { name: 'email', exact: true });
  await emailQueue.first().waitFor({ timeout: 15000 });
  t.ok(await emailQueue.count(), 'the email queue is listed');
  await emailQueue.first().click();
  await page.waitForURL(/\/admin\/board\/queue\/email/);
  t.same(failedRequests, [], 'every script, style and API call of the board loaded');
  await saveScreenshot(page, 'admin-board-email-queue');
});
