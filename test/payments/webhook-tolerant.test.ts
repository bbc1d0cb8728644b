import t from 'tap';
import { sql } from 'kysely';
import { startSmtpServer, startTestErrand, testEnv, waitFor, waitForOutboxDrained } from '../support/helpers.js';
import { createOrder, eventId, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';

// The webhook is the one body that accepts unknown properties (CONTRACT.md): providers add fields to events without notice.
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
const { app, deps } = errand;

const statusOf = async (id: string) => (await deps.db.selectFrom('orders').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const trackingJobs = async (orderId: string) =>
  (await deps.db.selectFrom('outbox').select('id').where(sql<string>`payload->>'orderId'`, '=', orderId).execute()).length;

t.test('extra properties at the top level and inside data: 200, paid, one email', async (t) => {
  const order = await createOrder(app, { email: 'tolerant@example.com', amount: 1999, currency: 'USD' });
  const event = {
    id: eventId(),
    object: 'event',
    api_version: '2031-01-01',
    created: 1767225600,
    livemode: false,
    request: { id: null, idempotency_key: 'abc' },
    type: 'payment.succeeded',
    data: {
      providerRef: order.providerRef,
      amount: 1999,
      currency: 'USD',
      amount_captured: 1999,
      payment_method: { card: { brand: 'visa', last4: '4242', checks: { cvc: 'pass' } } },
      metadata: {},
      refunds: [],
    },
  };
  const res = await sendWebhook(app, event);
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { received: true });
  t.equal(await statusOf(order.id), 'paid');
  await waitFor(() => smtp.received.some((e) => e.to[0] === 'tolerant@example.com') || undefined, 15000, 'tracking email');
  t.same((await sendWebhook(app, event)).json(), { received: true, duplicate: true }, 'its replay is a duplicate');
  // Every outbox row published and its job finished: no further email is on its way.
  await waitForOutboxDrained(deps);
  t.equal(smtp.received.filter((e) => e.to[0] === 'tolerant@example.com').length, 1, 'exactly one email');
  t.equal(await trackingJobs(order.id), 1, 'one outbox job');
});

t.test('a known field with a wrong type is still a 400 (no coercion) and changes nothing', async (t) => {
  const order = await createOrder(app, { email: 'typed@example.com', amount: 1999, currency: 'USD' });
  const good = paymentEvent(order);
  const cases: Array<[string, unknown]> = [
    ['amount as a string', { ...good, extra: 1, data: { ...good.data, amount: '1999', more: true } }],
    ['amount fractional', { ...good, data: { ...good.data, amount: 1999.5 } }],
    ['currency as a number', { ...good, data: { ...good.data, currency: 840 } }],
    ['providerRef as an object', { ...good, data: { ...good.data, providerRef: { id: order.providerRef } } }],
    ['data missing', { id: good.id, type: good.type }],
    ['id as a number', { ...good, id: 42 }],
    ['type as an array', { ...good, type: ['payment.succeeded'] }],
  ];
  for (const [name, body] of cases) {
    const res = await sendWebhook(app, body);
    t.equal(res.statusCode, 400, name);
    t.match(res.json(), { statusCode: 400, error: 'Bad Request' }, name);
  }
  t.equal(await statusOf(order.id), 'pending');
  const recorded = await deps.db.selectFrom('payment_events').select('event_id').where('event_id', '=', good.id).execute();
  t.equal(recorded.length, 0, 'no event id recorded');
});

t.test('an event type errand does not handle: 200 ignored and recorded; its replay is a duplicate', async (t) => {
  const order = await createOrder(app, { email: 'ignored@example.com' });
  const refund = { id: eventId(), type: 'payment.refunded', data: { providerRef: order.providerRef, amount: 1999, currency: 'USD', reason: 'requested' } };
  const first = await sendWebhook(app, refund);
  t.equal(first.statusCode, 200);
  t.same(first.json(), { received: true, ignored: true });
  const row = await deps.db.selectFrom('payment_events').selectAll().where('event_id', '=', refund.id).executeTakeFirst();
  t.match(row, { type: 'payment.refunded', provider_ref: order.providerRef, order_id: null, transitioned: false }, 'recorded by id');
  t.same((await sendWebhook(app, refund)).json(), { received: true, duplicate: true }, 'replay');

  // An unknown type whose data has nothing errand knows (or no data at all) is still only recorded.
  const odd = { id: eventId(), type: 'customer.created', data: { customer: { id: 'cus_1' } } };
  t.same((await sendWebhook(app, odd)).json(), { received: true, ignored: true });
  t.same((await sendWebhook(app, odd)).json(), { received: true, duplicate: true });
  const bare = { id: eventId(), type: 'ping' };
  t.same((await sendWebhook(app, bare)).json(), { received: true, ignored: true });
  t.equal((await deps.db.selectFrom('payment_events').select('provider_ref').where('event_id', '=', bare.id).executeTakeFirstOrThrow()).provider_ref, null);

  t.equal(await statusOf(order.id), 'pending', 'the order is untouched');
  t.equal(await trackingJobs(order.id), 0);
});
