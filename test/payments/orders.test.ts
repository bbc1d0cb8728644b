import t from 'tap';
import { randomUUID } from 'node:crypto';
import { startTestErrand, testEnv } from '../support/helpers.js';
import { createOrder, LINK_SECRET, WEBHOOK_SECRET } from '../support/payments.js';
import { deriveTrackingKey, trackingToken } from '../../src/payments/tracking.js';

const errand = await startTestErrand(t, testEnv(t, { PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, LINK_SECRET }));
const { app, deps } = errand;
// Tracking links are keyed by errand's own LINK_SECRET, never by the secret the payment provider shares.
const key = deriveTrackingKey(LINK_SECRET);

t.test('POST /orders creates a pending order', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/orders', payload: { email: 'Carol@Example.com', amount: 250, currency: 'GBP' } });
  t.equal(res.statusCode, 201);
  const body = res.json();
  t.same(Object.keys(body).sort(), ['amount', 'createdAt', 'currency', 'id', 'providerRef', 'status']);
  t.match(body, { status: 'pending', amount: 250, currency: 'GBP', providerRef: /^pay_[0-9a-f]{24}$/ });
  const row = await deps.db.selectFrom('orders').selectAll().where('id', '=', body.id).executeTakeFirstOrThrow();
  t.equal(row.email, 'carol@example.com', 'buyer email stored, normalised');
  t.equal(row.provider_ref, body.providerRef);
  t.equal(new Date(body.createdAt).getTime(), row.created_at.getTime());

  const second = await createOrder(app, { email: 'carol@example.com' });
  t.not(second.providerRef, body.providerRef, 'providerRef unique per order');
  t.not(second.id, body.id);
});

t.test('POST /orders refuses bad input with 400', async (t) => {
  const valid = { email: 'dave@example.com', amount: 1000, currency: 'USD' };
  const cases: Array<[string, unknown]> = [
    ['amount as a string', { ...valid, amount: '10' }],
    ['negative amount', { ...valid, amount: -5 }],
    ['zero amount', { ...valid, amount: 0 }],
    ['fractional amount', { ...valid, amount: 10.5 }],
    ['lower-case currency', { ...valid, currency: 'usd' }],
    ['four-letter currency', { ...valid, currency: 'USDT' }],
    ['unknown field', { ...valid, coupon: 'FREE' }],
    ['invalid email', { ...valid, email: 'not-an-email' }],
    ['email as a number', { ...valid, email: 12345 }],
    ['missing amount', { email: valid.email, currency: 'USD' }],
  ];
  const before = await deps.db
    .selectFrom('orders')
    .select(({ fn }) => fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  for (const [name, payload] of cases) {
    const res = await app.inject({ method: 'POST', url: '/orders', payload: payload as object });
    t.equal(res.statusCode, 400, name);
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: String }, name);
  }
  const after = await deps.db
    .selectFrom('orders')
    .select(({ fn }) => fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  t.equal(after.n, before.n, 'no order written');
});

t.test('tracking answers only to the right token, with one 404 for every refusal', async (t) => {
  const order = await createOrder(app, { email: 'erin@example.com', amount: 4200, currency: 'JPY' });
  const other = await createOrder(app, { email: 'frank@example.com' });
  const token = trackingToken(key, order.id);

  const ok = await app.inject({ method: 'GET', url: `/orders/${order.id}/tracking?token=${token}` });
  t.equal(ok.statusCode, 200);
  t.same(ok.json(), { id: order.id, status: 'pending', amount: 4200, currency: 'JPY', paidAt: null });

  const unknownId = randomUUID();
  const refusals: Array<[string, string]> = [
    ['wrong token', `/orders/${order.id}/tracking?token=${'A'.repeat(token.length)}`],
    ['truncated token', `/orders/${order.id}/tracking?token=${token.slice(0, 20)}`],
    ['missing token', `/orders/${order.id}/tracking`],
    ["other order's token", `/orders/${order.id}/tracking?token=${trackingToken(key, other.id)}`],
    ["this order's token on the other order", `/orders/${other.id}/tracking?token=${token}`],
    ['unknown id with its own valid token', `/orders/${unknownId}/tracking?token=${trackingToken(key, unknownId)}`],
    ['non-uuid id', `/orders/123/tracking?token=${trackingToken(key, '123')}`],
    [
      'token of another secret',
      `/orders/${order.id}/tracking?token=${trackingToken(deriveTrackingKey('some-other-secret-0123456789'), order.id)}`,
    ],
    [
      'token keyed by the webhook secret',
      `/orders/${order.id}/tracking?token=${trackingToken(deriveTrackingKey(WEBHOOK_SECRET), order.id)}`,
    ],
  ];
  const first = refusals.length ? (await app.inject({ method: 'GET', url: refusals[0][1] })).json() : undefined;
  t.same(first, { statusCode: 404, error: 'Not Found', message: 'order not found' });
  for (const [name, url] of refusals) {
    const res = await app.inject({ method: 'GET', url });
    t.equal(res.statusCode, 404, name);
    t.same(res.json(), first, `${name}: same body`);
  }
});
