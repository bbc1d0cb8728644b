import t from 'tap';
import { sql } from 'kysely';
import { extractLink, startSmtpServer, startTestErrand, testEnv, waitFor, waitForOutboxDrained } from '../support/helpers.js';
import { createOrder, paymentEvent, sendWebhook, signatureHeader, WEBHOOK_SECRET } from '../support/payments.js';

const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
const { app, deps } = errand;

const emailsTo = (address: string) => smtp.received.filter((e) => e.to[0] === address);
const trackingJobsFor = (orderId: string) =>
  deps.db.selectFrom('outbox').select('id').where('job_name', '=', 'order-tracking-link').where(sql<string>`payload->>'orderId'`, '=', orderId).execute();

const signaturesSent: string[] = [];
const tokensSeen: string[] = [];

t.test('a signed payment.succeeded marks the order paid and sends one tracking email whose link works', async (t) => {
  const order = await createOrder(app, { email: 'Buyer.One@Example.com', amount: 1999, currency: 'USD' });
  t.match(order, { status: 'pending', amount: 1999, currency: 'USD', providerRef: /^pay_[0-9a-f]{24}$/ });
  t.match(order.id, /^[0-9a-f-]{36}$/);
  t.ok(!Number.isNaN(Date.parse(order.createdAt)), 'createdAt is a timestamp');

  const event = paymentEvent(order);
  const raw = JSON.stringify(event);
  const header = signatureHeader(raw);
  signaturesSent.push(header.split('v1=')[1]!);
  const res = await sendWebhook(app, raw, { header });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { received: true });

  const row = await deps.db.selectFrom('orders').select(['status', 'paid_at']).where('id', '=', order.id).executeTakeFirstOrThrow();
  t.equal(row.status, 'paid');
  t.ok(row.paid_at, 'paid_at set');

  const [email] = await smtp.waitForEmails(1);
  t.same(email!.to, ['buyer.one@example.com'], 'sent to the buyer, normalised');
  t.match(email!.subject, order.id);
  const link = new URL(extractLink(email!.text, `/orders/${order.id}/tracking?token=`));
  t.equal(link.origin, 'http://errand.test', 'link built from PUBLIC_BASE_URL');
  const token = link.searchParams.get('token')!;
  tokensSeen.push(token);
  t.ok(email!.html.includes(link.pathname), 'html part carries the link too');

  const tracking = await app.inject({ method: 'GET', url: `${link.pathname}${link.search}` });
  t.equal(tracking.statusCode, 200);
  const body = tracking.json();
  t.same(Object.keys(body).sort(), ['amount', 'currency', 'id', 'paidAt', 'status']);
  t.match(body, { id: order.id, status: 'paid', amount: 1999, currency: 'USD' });
  t.equal(new Date(body.paidAt).getTime(), row.paid_at!.getTime(), 'paidAt is the stored time');

  // Another order's token does not open this order, and a wrong token neither.
  const other = await createOrder(app, { email: 'other@example.com' });
  const otherToken = await app.inject({ method: 'GET', url: `/orders/${other.id}/tracking?token=${token}` });
  t.equal(otherToken.statusCode, 404, "one order's token does not open another");
  const wrong = await app.inject({ method: 'GET', url: `/orders/${order.id}/tracking?token=${token.slice(0, -2)}xx` });
  t.equal(wrong.statusCode, 404);
  t.same(wrong.json(), otherToken.json(), 'same body for every refusal');
});

t.test('the same event 5 times and 20 different events at once: one transition, one email', async (t) => {
  const address = 'buyer.two@example.com';
  const order = await createOrder(app, { email: address, amount: 500, currency: 'EUR' });
  const event = paymentEvent(order);

  const replays = await Promise.all(Array.from({ length: 5 }, () => sendWebhook(app, event)));
  t.same(replays.map((r) => r.statusCode), [200, 200, 200, 200, 200]);
  const duplicates = replays.filter((r) => r.json().duplicate === true).length;
  t.equal(duplicates, 4, 'four of the five answered as duplicates');
  t.same(replays.find((r) => !r.json().duplicate)!.json(), { received: true });

  const distinct = await Promise.all(Array.from({ length: 20 }, () => sendWebhook(app, paymentEvent(order))));
  t.ok(distinct.every((r) => r.statusCode === 200), 'every distinct event accepted');
  t.ok(distinct.every((r) => r.json().duplicate === undefined), 'distinct events are not duplicates');

  const again = await sendWebhook(app, event);
  t.same(again.json(), { received: true, duplicate: true }, 'a later replay is a duplicate');

  await waitFor(() => emailsTo(address).length >= 1 || undefined, 15000, 'tracking email');
  await waitForOutboxDrained(deps);
  t.equal(emailsTo(address).length, 1, 'exactly one tracking email');
  t.equal((await trackingJobsFor(order.id)).length, 1, 'exactly one outbox job');
  const transitions = await deps.db.selectFrom('payment_events').select('event_id').where('order_id', '=', order.id).where('transitioned', '=', true).execute();
  t.equal(transitions.length, 1, 'exactly one event moved the order');
  const recorded = await deps.db.selectFrom('payment_events').select('event_id').where('order_id', '=', order.id).execute();
  t.equal(recorded.length, 21, 'every distinct event id recorded once');
});

t.test('logs carry no email address, tracking token or signature', async (t) => {
  const raw = errand.logs.raw.join('\n');
  t.ok(raw.includes('order created'), 'logs were captured');
  for (const address of ['buyer.one@example.com', 'Buyer.One@Example.com', 'buyer.two@example.com', 'other@example.com']) {
    t.notOk(raw.includes(address), `no ${address}`);
  }
  t.notOk(/[a-z0-9._%+-]{2,}@example\.com/i.test(raw), 'no unmasked address at all');
  t.ok(tokensSeen.length > 0);
  for (const token of tokensSeen) t.notOk(raw.includes(token), 'no tracking token');
  for (const signature of signaturesSent) t.notOk(raw.includes(signature), 'no signature');
  t.notOk(raw.includes(WEBHOOK_SECRET), 'no secret');
  t.notOk(raw.includes('v1='), 'no signature header');
});
