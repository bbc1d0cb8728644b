import t from 'tap';
import { sql } from 'kysely';
import { startSmtpServer, startTestErrand, testEnv, waitFor, waitForOutboxDrained } from '../support/helpers.js';
import { createOrder, eventId, paymentEvent, signatureHeader, WEBHOOK_SECRET, type CreatedOrder } from '../support/payments.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

// Real HTTP on a real port: the concurrent cases below are concurrent connections, not in-process injections.
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(
  t,
  testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, EMAIL_CONCURRENCY: '4', EMAIL_RATE_MAX: '100', PG_POOL_MAX: '10' }),
);
const { app, deps } = errand;
const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });

async function post(body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const raw = JSON.stringify(body);
  const res = await fetch(`${baseUrl}/payments/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'webhook-signature': signatureHeader(raw) }, body: raw });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
const newOrder = (email: string): Promise<CreatedOrder> => createOrder(app, { email, amount: 1999, currency: 'USD' });
const statusOf = async (id: string) => (await deps.db.selectFrom('orders').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const outboxRows = async (orderId: string) =>
  (await deps.db.selectFrom('outbox').select('id').where('job_name', '=', 'order-tracking-link').where(sql<string>`payload->>'orderId'`, '=', orderId).execute()).length;
const transitions = async (orderId: string) =>
  deps.db.selectFrom('payment_events').select(['event_id', 'type']).where('order_id', '=', orderId).where('transitioned', '=', true).execute();
const emailsTo = (address: string) => smtp.received.filter((e) => e.to[0] === address).length;
async function lateSuccessCounter(): Promise<number> {
  const res = await fetch(`${baseUrl}/metrics`);
  return sampleValue(parsePrometheus(await res.text()), 'errand_payments_late_success_total') ?? NaN;
}
/** Waits for `address`'s first email, then until every outbox row is published and its job finished (no second one on its way). */
async function settledEmails(address: string): Promise<number> {
  await waitFor(() => emailsTo(address) >= 1 || undefined, 20000, `email to ${address}`);
  await waitForOutboxDrained(deps);
  return emailsTo(address);
}

t.test('failed → succeeded: paid, exactly one email, counter 1, a warning naming the order', async (t) => {
  const order = await newOrder('late-failed@example.com');
  t.same((await post(paymentEvent(order, 'payment.failed'))).json, { received: true });
  t.equal(await statusOf(order.id), 'failed');
  t.equal(await lateSuccessCounter(), 0, 'no late success yet');

  t.same((await post(paymentEvent(order, 'payment.succeeded'))).json, { received: true });
  t.equal(await statusOf(order.id), 'paid');
  const row = await deps.db.selectFrom('orders').select('paid_at').where('id', '=', order.id).executeTakeFirstOrThrow();
  t.ok(row.paid_at, 'paid_at set');
  t.equal(await lateSuccessCounter(), 1, 'errand_payments_late_success_total 1');
  const warning = errand.logs.lines().find((l) => l.level === 40 && l.orderId === order.id && /late payment success/.test(String(l.msg)));
  t.ok(warning, 'warning line with the order id');
  t.equal(warning?.previousStatus, 'failed');

  // A second succeeded event (another id) changes nothing more.
  t.same((await post(paymentEvent(order, 'payment.succeeded'))).json, { received: true });
  t.equal(await settledEmails('late-failed@example.com'), 1, 'one email');
  t.equal(await outboxRows(order.id), 1, 'one outbox row');
  t.equal(await lateSuccessCounter(), 1, 'still 1');
});

t.test('expired → succeeded: paid, one email', async (t) => {
  const order = await newOrder('late-expired@example.com');
  await post(paymentEvent(order, 'payment.expired'));
  t.equal(await statusOf(order.id), 'expired');
  t.same((await post(paymentEvent(order, 'payment.succeeded'))).json, { received: true });
  t.equal(await statusOf(order.id), 'paid');
  t.equal(await lateSuccessCounter(), 2);
  t.equal(await settledEmails('late-expired@example.com'), 1);
});

t.test('succeeded → failed / expired: still paid, no second email, a warning', async (t) => {
  const order = await newOrder('paid-final@example.com');
  await post(paymentEvent(order, 'payment.succeeded'));
  t.equal(await statusOf(order.id), 'paid');
  for (const type of ['payment.failed', 'payment.expired']) {
    const res = await post(paymentEvent(order, type));
    t.equal(res.status, 200, type);
    t.same(res.json, { received: true });
  }
  t.equal(await statusOf(order.id), 'paid', 'paid is final');
  const warnings = errand.logs.lines().filter((l) => l.level === 40 && l.orderId === order.id && /paid is final/.test(String(l.msg)));
  t.equal(warnings.length, 2, 'one warning per refused outcome');
  t.equal(await settledEmails('paid-final@example.com'), 1, 'no second email');
  t.equal(await outboxRows(order.id), 1);
  t.equal(await lateSuccessCounter(), 2, 'not a late success');
});

t.test('concurrent failed and succeeded events for one order end paid with one email (20 orders, both orders of arrival)', async (t) => {
  const orders = await Promise.all(Array.from({ length: 20 }, (_, i) => newOrder(`race-${i}@example.com`)));
  const before = await lateSuccessCounter();
  const replies = await Promise.all(
    orders.flatMap((order, i) => {
      const events = [paymentEvent(order, 'payment.failed'), paymentEvent(order, 'payment.succeeded'), paymentEvent(order, 'payment.expired')];
      return (i % 2 === 0 ? events : events.reverse()).map(post);
    }),
  );
  t.ok(replies.every((r) => r.status === 200), 'every event accepted');
  let lateSuccesses = 0;
  for (const order of orders) {
    t.equal(await statusOf(order.id), 'paid', `order ${order.id} paid`);
    t.equal(await outboxRows(order.id), 1, 'one outbox row');
    const moved = await transitions(order.id);
    // Either succeeded won outright, or failed/expired won and succeeded followed: never anything else.
    t.ok(moved.length === 1 ? moved[0]!.type === 'payment.succeeded' : moved.length === 2 && moved.some((m) => m.type === 'payment.succeeded'), 'transitions follow the state rules');
    if (moved.length === 2) lateSuccesses += 1;
  }
  t.equal((await lateSuccessCounter()) - before, lateSuccesses, 'the counter counts exactly the failed|expired → paid moves');
  const addresses = orders.map((_, i) => `race-${i}@example.com`);
  await waitFor(() => addresses.every((a) => emailsTo(a) >= 1) || undefined, 30000, 'emails');
  await waitForOutboxDrained(deps, { timeoutMs: 30000 });
  t.ok(addresses.every((a) => emailsTo(a) === 1), 'exactly one email each');
});

t.test('hammer: 40 distinct succeeded events and 10 copies of one event at once → one transition, one outbox row', async (t) => {
  const order = await newOrder('hammer@example.com');
  const copy = paymentEvent(order);
  const replies = await Promise.all([
    ...Array.from({ length: 40 }, () => post(paymentEvent(order))),
    ...Array.from({ length: 10 }, () => post(copy)),
  ]);
  t.ok(replies.every((r) => r.status === 200));
  t.equal(replies.slice(40).filter((r) => r.json.duplicate === true).length, 9, 'nine copies answered as duplicates');
  t.equal((await transitions(order.id)).length, 1, 'one event moved the order');
  t.equal(await outboxRows(order.id), 1, 'one outbox row');
  const recorded = await deps.db.selectFrom('payment_events').select('event_id').where('order_id', '=', order.id).execute();
  t.equal(recorded.length, 41, 'every distinct event id recorded once');
  t.equal(await settledEmails('hammer@example.com'), 1);
});

t.test('concurrent mismatches: 422, nothing recorded, nothing changed; the matching events still apply once', async (t) => {
  const order = await newOrder('mismatch-race@example.com');
  const wrong = Array.from({ length: 15 }, (_, i) => ({ id: eventId(), type: 'payment.succeeded', data: { providerRef: order.providerRef, amount: i % 2 ? 1 : 1999, currency: i % 2 ? 'USD' : 'EUR' } }));
  const mismatchReplies = await Promise.all(wrong.map(post));
  t.ok(mismatchReplies.every((r) => r.status === 422), 'every mismatch answered 422');
  t.equal(await statusOf(order.id), 'pending');
  const ids = wrong.map((e) => e.id);
  t.equal((await deps.db.selectFrom('payment_events').select('event_id').where('event_id', 'in', ids).execute()).length, 0, 'no mismatched event id recorded');
  t.equal(await outboxRows(order.id), 0);

  const mixed = await Promise.all([...wrong.map(post), ...Array.from({ length: 5 }, () => post(paymentEvent(order, 'payment.failed'))), post(paymentEvent(order))]);
  t.ok(mixed.slice(0, 15).every((r) => r.status === 422), 'mismatches still 422 among good events');
  t.ok(mixed.slice(15).every((r) => r.status === 200));
  t.equal(await statusOf(order.id), 'paid', 'failed races succeeded; succeeded wins either way');
  t.equal((await deps.db.selectFrom('payment_events').select('event_id').where('event_id', 'in', ids).execute()).length, 0, 'still none recorded');
  t.equal(await outboxRows(order.id), 1);
});
