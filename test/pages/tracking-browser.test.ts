import t, { type Test } from 'tap';
import type { Page } from 'playwright-core';
import { extractLink, freePort, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { trackingToken } from '../../src/payments/tracking.js';
import { createOrder, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';
import { fitsTheWindow, launchBrowser, PHONE_VIEWPORT, saveScreenshot, seriousAccessibilityViolations } from '../support/browser.js';

// A buyer opens the tracking link from the real "your order is paid" email, in a real Chromium.
const smtp = await startSmtpServer(t);
const port = await freePort();
const baseUrl = `http://127.0.0.1:${port}`;
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PUBLIC_BASE_URL: baseUrl, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
await errand.app.listen({ port, host: '127.0.0.1' });
const { app } = errand;
const browser = await launchBrowser(t);
const context = await browser.newContext({ viewport: PHONE_VIEWPORT });
t.teardown(() => context.close());

/** Creates an order, pays it by a signed webhook and returns the tracking email that arrives. */
async function paidOrderEmail(email: string, amount: number, currency: string) {
  const order = await createOrder(app, { email, amount, currency });
  const res = await sendWebhook(app, paymentEvent(order));
  if (res.statusCode !== 200) throw new Error(`webhook answered ${res.statusCode}`);
  const message = await waitFor(() => smtp.received.find((m) => m.to[0] === email), 15000, `tracking email to ${email}`);
  return { order, message, link: extractLink(message.text, `/orders/${order.id}/tracking?token=`) };
}

async function assertAccessibleAndShoot(t: Test, page: Page, name: string) {
  t.same(await seriousAccessibilityViolations(page), [], `${name}: no serious or critical axe violation`);
  t.ok(await fitsTheWindow(page), `${name}: no sideways scrolling on a phone`);
  await saveScreenshot(page, name);
}

const termOf = (page: Page, term: string) => page.locator('dt', { hasText: term }).locator('xpath=following-sibling::dd[1]').textContent();

t.test('a paid order in USD: the page says paid, the amount in dollars and the paid date', async (t) => {
  const { order, message, link } = await paidOrderEmail('usd.buyer@example.com', 1999, 'USD');
  t.match(message.text, '$19.99', 'the email states the amount in the currency too');
  const page = await context.newPage();
  t.teardown(() => page.close());
  const res = await page.goto(link);
  t.equal(res?.status(), 200);
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Your order is paid');
  t.equal(await page.locator('.status').textContent(), 'Paid');
  t.equal(await termOf(page, 'Amount'), '$19.99');
  t.equal(await termOf(page, 'Order'), order.id);
  t.match(await termOf(page, 'Paid on'), /^\d{1,2} [A-Z][a-z]+ \d{4} at \d\d:\d\d UTC$/);
  const paidAt = await page.locator('time').getAttribute('datetime');
  t.ok(paidAt && Math.abs(Date.parse(paidAt) - Date.now()) < 60_000, 'machine-readable paid time, just now');
  await assertAccessibleAndShoot(t, page, 'tracking-paid-usd');

  // The email's own HTML part, as most people see it, in a blank tab (the page above would apply its CSP to it).
  const emailTab = await context.newPage();
  t.teardown(() => emailTab.close());
  await emailTab.setContent(message.html);
  t.equal(await emailTab.getByRole('link', { name: 'Track my order' }).getAttribute('href'), link);
  await assertAccessibleAndShoot(t, emailTab, 'email-order-tracking');
});

t.test('a paid order in JPY (no minor unit): ¥1,999, not ¥19.99', async (t) => {
  const { link, message } = await paidOrderEmail('jpy.buyer@example.com', 1999, 'JPY');
  t.match(message.text, '¥1,999');
  const page = await context.newPage();
  t.teardown(() => page.close());
  t.equal((await page.goto(link))?.status(), 200);
  t.equal(await page.locator('.status').textContent(), 'Paid');
  t.equal(await termOf(page, 'Amount'), '¥1,999');
  await assertAccessibleAndShoot(t, page, 'tracking-paid-jpy');
});

t.test('a pending order, and a wrong token: the buyer reads what it means', async (t) => {
  const order = await createOrder(app, { email: 'waiting@example.com', amount: 1500, currency: 'KWD' });
  const { link } = await paidOrderEmail('reference@example.com', 100, 'EUR');
  const page = await context.newPage();
  t.teardown(() => page.close());

  // No email is sent before payment; the token is the one the email would carry.
  const pending = await page.goto(`${baseUrl}/orders/${order.id}/tracking?token=${trackingToken(errand.deps.trackingKey, order.id)}`);
  t.equal(pending?.status(), 200);
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'We are waiting for your payment');
  t.equal(await page.locator('.status').textContent(), 'Waiting for payment');
  t.equal(await termOf(page, 'Amount'), 'KWD\u00a01.500', 'three decimals for KWD');
  t.equal(await page.locator('dt', { hasText: 'Paid on' }).count(), 0, 'no paid date yet');
  await assertAccessibleAndShoot(t, page, 'tracking-pending-kwd');

  const wrongToken = await page.goto(`${baseUrl}/orders/${order.id}/tracking?token=${new URL(link).searchParams.get('token')}`);
  t.equal(wrongToken?.status(), 404, "another order's token");
  t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Order not found');
  await assertAccessibleAndShoot(t, page, 'tracking-not-found');
  const notFoundHtml = await page.content();
  await page.goto(`${baseUrl}/orders/not-an-id/tracking?token=x`);
  t.equal(await page.content(), notFoundHtml, 'the same page for a wrong id');
});
