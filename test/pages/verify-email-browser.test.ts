import t, { type Test } from 'tap';
import type { Page } from 'playwright-core';
import { hashToken } from '../../src/signup/tokens.js';
import { extractLink, freePort, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { fitsTheWindow, launchBrowser, PHONE_VIEWPORT, saveScreenshot, seriousAccessibilityViolations } from '../support/browser.js';

// The person's path through a real delivered email, in a real Chromium against errand on a real port.
const smtp = await startSmtpServer(t);
const port = await freePort();
const baseUrl = `http://127.0.0.1:${port}`;
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PUBLIC_BASE_URL: baseUrl }));
await errand.app.listen({ port, host: '127.0.0.1' });
const { deps } = errand;
const browser = await launchBrowser(t);
const tokensSeen: string[] = [];

/** Signs up through the API and returns the verification link from the email that arrives. */
async function signupAndReceiveLink(email: string) {
  const res = await fetch(`${baseUrl}/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email }) });
  if (res.status !== 202) throw new Error(`signup answered ${res.status}`);
  const message = await waitFor(() => smtp.received.find((m) => m.to[0] === email), 15000, `email to ${email}`);
  const link = extractLink(message.text, '/auth/verify-email?token=');
  const token = new URL(link).searchParams.get('token')!;
  tokensSeen.push(token);
  return { message, link, token };
}

const tokenUsedAt = async (token: string) =>
  (await deps.db.selectFrom('email_verification_tokens').select('used_at').where('token_hash', '=', hashToken(token)).executeTakeFirstOrThrow()).used_at;
const verifiedAt = async (email: string) => (await deps.db.selectFrom('users').select('verified_at').where('email', '=', email).executeTakeFirstOrThrow()).verified_at;

/** A fresh phone-sized tab that records what the page's security policy refused (a wrong style hash would show here). */
async function openTab() {
  const context = await browser.newContext({ viewport: PHONE_VIEWPORT });
  const page = await context.newPage();
  const refused: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) refused.push(message.text());
  });
  return { page, refused, close: () => context.close() };
}

async function assertAccessibleAndShoot(t: Test, page: Page, name: string) {
  t.same(await seriousAccessibilityViolations(page), [], `${name}: no serious or critical axe violation`);
  t.ok(await fitsTheWindow(page), `${name}: no sideways scrolling on a phone`);
  await saveScreenshot(page, name);
}

t.test('the link from the email opens a confirm page; the button verifies; the link again says "already used"', async (t) => {
  const address = 'alice.browser@example.com';
  const { message, link, token } = await signupAndReceiveLink(address);
  t.ok(message.html.includes(link.replaceAll('&', '&amp;')), 'the HTML part carries the same link');
  const tab = await openTab();
  t.teardown(tab.close);
  const { page } = tab;

  const opened = await page.goto(link);
  t.equal(opened?.status(), 200);
  t.equal(await page.title(), 'Confirm your email address for errand · errand');
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Confirm your email address for errand');
  t.match(await page.locator('main').textContent(), 'a***@example.com', 'the address, masked');
  t.notMatch(await page.content(), address, 'never the full address');
  t.equal(await page.evaluate('document.documentElement.lang'), 'en');
  // The stylesheet ran: its hash is in the policy (a mismatch would leave the browser's grey default button).
  const button = page.getByRole('button', { name: 'Confirm my email address' });
  t.equal(await button.evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor), 'rgb(30, 64, 175)', 'page style applied under the CSP');
  await assertAccessibleAndShoot(t, page, 'verify-email-confirm');
  t.equal(await tokenUsedAt(token), null, 'opening the link used nothing');
  t.equal(await verifiedAt(address), null, 'the address is not verified by opening the link');

  const [posted] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), button.click()]);
  t.equal(posted.status(), 200);
  await page.waitForLoadState();
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Your email address is confirmed');
  t.not(await verifiedAt(address), null, 'the user is verified');
  t.not(await tokenUsedAt(token), null, 'the token is used');
  await assertAccessibleAndShoot(t, page, 'verify-email-verified');

  const again = await page.goto(link);
  t.equal(again?.status(), 400);
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'This link has already been used');
  t.match(await page.locator('main').textContent(), 'already confirmed');
  await assertAccessibleAndShoot(t, page, 'verify-email-already-used');
  t.same(tab.refused, [], 'the security policy refused nothing the pages use');
});

t.test('a mail scanner fetching the link (Accept: text/html, no click) leaves the token for the person', async (t) => {
  const address = 'scanned@example.com';
  const { link, token } = await signupAndReceiveLink(address);
  // What Safe Links-style scanners do: fetch the link as a browser would, read the page, submit nothing.
  const scan = await fetch(link, { headers: { accept: 'text/html', 'user-agent': 'link-scanner/1.0' } });
  t.equal(scan.status, 200);
  t.match(await scan.text(), 'Confirm your email address for errand');
  const headCheck = await fetch(link, { method: 'HEAD' });
  t.equal(headCheck.status, 200);
  t.equal(await tokenUsedAt(token), null, 'token unused after the scan');
  t.equal(await verifiedAt(address), null, 'address not verified by the scanner');

  // The person's own click, later, still works.
  const tab = await openTab();
  t.teardown(tab.close);
  await tab.page.goto(link);
  await Promise.all([tab.page.waitForResponse((r) => r.request().method() === 'POST'), tab.page.getByRole('button', { name: 'Confirm my email address' }).click()]);
  await tab.page.waitForLoadState();
  t.equal(await tab.page.getByRole('heading', { level: 1 }).textContent(), 'Your email address is confirmed');
  t.not(await verifiedAt(address), null, 'verified by the person, after the scan');
});

t.test('an API client (JSON GET) still verifies in one step after a browser opened the link', async (t) => {
  const address = 'api.client@example.com';
  const { link } = await signupAndReceiveLink(address);
  const tab = await openTab();
  t.teardown(tab.close);
  t.equal((await tab.page.goto(link))?.status(), 200, 'the browser saw the confirm page');
  const api = await fetch(link, { headers: { accept: 'application/json' } });
  t.equal(api.status, 200);
  t.same(await api.json(), { status: 'verified' }, 'the token was still unused, so the JSON GET works');
  t.not(await verifiedAt(address), null);
});

t.test('a broken or expired link gets a page saying what to do next', async (t) => {
  const tab = await openTab();
  t.teardown(tab.close);
  const broken = await tab.page.goto(`${baseUrl}/auth/verify-email?token=cut-off-by-the-mail-app`);
  t.equal(broken?.status(), 400);
  t.equal(await tab.page.getByRole('heading', { level: 1 }).textContent(), 'This link does not work');
  t.match(await tab.page.locator('main').textContent(), 'Sign up again with the same email address');
  await assertAccessibleAndShoot(t, tab.page, 'verify-email-unknown');

  const address = 'too.late@example.com';
  const { link, token } = await signupAndReceiveLink(address);
  await deps.db.updateTable('email_verification_tokens').set({ expires_at: new Date(Date.now() - 1000) }).where('token_hash', '=', hashToken(token)).execute();
  const expired = await tab.page.goto(link);
  t.equal(expired?.status(), 400);
  t.equal(await tab.page.getByRole('heading', { level: 1 }).textContent(), 'This link has expired');
  t.match(await tab.page.locator('main').textContent(), 'sign up again with the same email address');
  await assertAccessibleAndShoot(t, tab.page, 'verify-email-expired');
});

t.test('the verification email itself reads well in a browser', async (t) => {
  const message = smtp.received[0]!;
  const tab = await openTab();
  t.teardown(tab.close);
  await tab.page.setContent(message.html);
  t.equal(await tab.page.getByRole('heading', { level: 1 }).textContent(), 'Confirm your email address');
  const button = tab.page.getByRole('link', { name: 'Confirm my email' });
  t.equal(await button.getAttribute('href'), extractLink(message.text, '/auth/verify-email?token='), 'the button links to the same URL as the text part');
  await assertAccessibleAndShoot(t, tab.page, 'email-verification');
});

t.test('no log line carries a verification token', async (t) => {
  t.ok(tokensSeen.length >= 4);
  t.same(errand.logs.raw.filter((line) => tokensSeen.some((token) => line.includes(token))), [], 'no token in any log line');
});
