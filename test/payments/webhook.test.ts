import t, { type Test } from 'tap';
import { sql } from 'kysely';
import { startSmtpServer, startTestErrand, testEnv, waitForOutboxDrained } from '../support/helpers.js';
import type { PaymentEvent } from '../../src/payments/events.js';
import { createOrder, eventId, paymentEvent, sendWebhook, signatureHeader, WEBHOOK_SECRET, type CreatedOrder } from '../support/payments.js';

// Checked by tsc: the static event type is the three literals (a mapped Type.Union once made it never).
'payment.expired' satisfies PaymentEvent['type'];
// @ts-expect-error not an event type
'payment.refunded' satisfies PaymentEvent['type'];

const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
const { app, deps } = errand;

async function orderState(id: string) {
  return deps.db.selectFrom('orders').select(['status', 'paid_at']).where('id', '=', id).executeTakeFirstOrThrow();
}
async function eventCount(orderId: string) {
  const rows = await deps.db.selectFrom('payment_events').select('event_id').where('order_id', '=', orderId).execute();
  return rows.length;
}
async function trackingJobs(orderId: string) {
  const rows = await deps.db.selectFrom('outbox').select('id').where(sql<string>`payload->>'orderId'`, '=', orderId).execute();
  return rows.length;
}
async function assertUntouched(t: Test, order: CreatedOrder) {
  t.same(await orderState(order.id), { status: 'pending', paid_at: null }, 'order still pending');
  t.equal(await eventCount(order.id), 0, 'no event recorded');
  t.equal(await trackingJobs(order.id), 0, 'no email queued');
}

t.test('signature failures answer 401 and change nothing', async (t) => {
  const order = await createOrder(app, { email: 'sig@example.com' });
  const event = paymentEvent(order);
  const raw = JSON.stringify(event);
  const now = Math.floor(Date.now() / 1000);
  const good = signatureHeader(raw, { timestamp: now });
  const cases: Array<[string, Parameters<typeof sendWebhook>[2]]> = [
    ['missing header', { header: null }],
    ['empty header', { header: '' }],
    ['malformed header', { header: 'sha256=abc' }],
    ['no v1', { header: `t=${now}` }],
    ['no t', { header: good.split(',')[1]! }],
    ['short v1', { header: `t=${now},v1=abcd` }],
    ['wrong secret', { secret: 'another-secret-0123456789abcdef' }],
    ['signature of another timestamp', { header: good.replace(`t=${now}`, `t=${now - 1}`) }],
    ['timestamp 301 s old', { timestamp: now - 301 }],
    ['timestamp 301 s ahead', { timestamp: Math.ceil(Date.now() / 1000) + 301 }],
    ['body altered after signing', { header: good, sendBody: raw.replace('"amount":1999', '"amount":1998') }],
    ['whitespace added after signing', { header: good, sendBody: `${raw} ` }],
  ];
  for (const [name, options] of cases) {
    const res = await sendWebhook(app, raw, options);
    t.equal(res.statusCode, 401, name);
    t.match(res.json(), { statusCode: 401, error: 'Unauthorized', message: /webhook-signature/ }, name);
  }
  await assertUntouched(t, order);

  // The same bytes, signed properly, pass: the refusals above were about the signature alone.
  // Verified over the raw bytes whatever the content type says.
  const relabelled = await app.inject({ method: 'POST', url: '/payments/webhook', headers: { 'content-type': 'text/plain', 'webhook-signature': good }, payload: `${raw} ` });
  t.equal(relabelled.statusCode, 401, 'text/plain body altered after signing');
  const ok = await sendWebhook(app, raw, { timestamp: now - 290 });
  t.equal(ok.statusCode, 200, 'a 290 s old signature is still accepted');
  t.equal((await orderState(order.id)).status, 'paid');
});

t.test('malformed JSON and schema errors answer 400; big bodies 413', async (t) => {
  const order = await createOrder(app, { email: 'bad-body@example.com' });
  const malformed = await sendWebhook(app, '{"id":"evt_1","type":');
  t.equal(malformed.statusCode, 400, 'malformed JSON');
  t.match(malformed.json(), { statusCode: 400, error: 'Bad Request', message: /JSON/ });
  t.equal((await sendWebhook(app, '')).statusCode, 400, 'empty body');
  const form = await app.inject({ method: 'POST', url: '/payments/webhook', headers: { 'content-type': 'application/x-www-form-urlencoded', 'webhook-signature': signatureHeader('a=1') }, payload: 'a=1' });
  t.equal(form.statusCode, 400, 'a signed non-JSON body is a 400, whatever its content type');

  // Unknown properties are no longer among these: the webhook accepts and ignores them (CONTRACT.md), see webhook-tolerant.test.ts.
  const invalid = [
    { ...paymentEvent(order), type: 7 },
    { ...paymentEvent(order), id: 12345 },
    { ...paymentEvent(order), data: { ...paymentEvent(order).data, amount: '1999' } },
    { ...paymentEvent(order), data: { ...paymentEvent(order).data, amount: 19.99 } },
    { ...paymentEvent(order), data: { ...paymentEvent(order).data, currency: 'usd' } },
    { ...paymentEvent(order), data: { ...paymentEvent(order).data, providerRef: null } },
    { ...paymentEvent(order), data: 'payment' },
    { type: 'payment.succeeded', data: paymentEvent(order).data },
    [paymentEvent(order)],
  ];
  for (const body of invalid) {
    const res = await sendWebhook(app, body);
    t.equal(res.statusCode, 400, JSON.stringify(body).slice(0, 60));
    t.match(res.json(), { statusCode: 400, error: 'Bad Request' });
  }

  const padding = 'x'.repeat(65 * 1024);
  const big = await sendWebhook(app, { ...paymentEvent(order), padding });
  t.equal(big.statusCode, 413, '65 KiB body');
  await assertUntouched(t, order);

  // The rest of the app keeps Fastify's JSON parser.
  const notJson = await app.inject({ method: 'POST', url: '/orders', headers: { 'content-type': 'application/json' }, payload: '{"email":' });
  t.equal(notJson.statusCode, 400, 'POST /orders still parses JSON itself');
});

t.test('amount or currency mismatch answers 422, changes nothing and logs an error with the order id', async (t) => {
  const order = await createOrder(app, { email: 'mismatch@example.com', amount: 1999, currency: 'USD' });
  const wrongAmount = paymentEvent({ ...order, amount: 1 });
  const res = await sendWebhook(app, wrongAmount);
  t.equal(res.statusCode, 422);
  t.match(res.json(), { statusCode: 422, error: 'Unprocessable Entity' });
  t.equal((await sendWebhook(app, paymentEvent({ ...order, currency: 'EUR' }))).statusCode, 422, 'wrong currency');
  await assertUntouched(t, order);

  const line = errand.logs.lines().find((l) => l.level === 50 && l.orderId === order.id);
  t.ok(line, 'error-level line naming the order');
  t.notOk(JSON.stringify(line).includes('mismatch@example.com'), 'without the address');

  // The refused event id was not recorded: the same id is refused again, not taken for a duplicate.
  t.equal((await sendWebhook(app, wrongAmount)).statusCode, 422, 'same event again is still 422');
});

t.test('payment.failed and payment.expired set the status and send no email; neither replaces the other', async (t) => {
  const failed = await createOrder(app, { email: 'failed@example.com' });
  const expired = await createOrder(app, { email: 'expired@example.com' });
  t.same((await sendWebhook(app, paymentEvent(failed, 'payment.failed'))).json(), { received: true });
  t.same((await sendWebhook(app, paymentEvent(expired, 'payment.expired'))).json(), { received: true });
  t.same(await orderState(failed.id), { status: 'failed', paid_at: null });
  t.same(await orderState(expired.id), { status: 'expired', paid_at: null });

  // A later success does reopen them (late-success.test.ts); another failure outcome does not.
  t.equal((await sendWebhook(app, paymentEvent(failed, 'payment.expired'))).statusCode, 200);
  t.equal((await sendWebhook(app, paymentEvent(expired, 'payment.failed'))).statusCode, 200);
  t.same(await orderState(failed.id), { status: 'failed', paid_at: null }, 'failed stays failed');
  t.same(await orderState(expired.id), { status: 'expired', paid_at: null }, 'expired stays expired');
  t.equal(await trackingJobs(failed.id), 0, 'no email job for the failed order');
  t.equal(await trackingJobs(expired.id), 0, 'no email job for the expired order');
  // No outbox row for either order (checked above), so no email can follow; everything queued so far has finished.
  await waitForOutboxDrained(deps);
  t.equal(smtp.received.filter((e) => e.to[0] === 'failed@example.com' || e.to[0] === 'expired@example.com').length, 0, 'no email sent');
});

t.test('an unknown providerRef answers 200 and logs a warning', async (t) => {
  const id = eventId();
  const res = await sendWebhook(app, { id, type: 'payment.succeeded', data: { providerRef: 'pay_unknown', amount: 100, currency: 'USD' } });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { received: true });
  const warning = errand.logs.lines().find((l) => l.level === 40 && l.eventId === id);
  t.ok(warning, 'warn line for the event');
  t.equal(warning?.providerRef, 'pay_unknown');
});
