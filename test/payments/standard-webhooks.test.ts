import t from 'tap';
import { randomBytes } from 'node:crypto';
import { createWebhookVerifier } from '../../src/core/webhook-signature.js';
import { startTestErrand, testEnv } from '../support/helpers.js';
import {
  createOrder,
  eventId,
  paymentEvent,
  postWebhook,
  sendWebhook,
  signatureHeader,
  standardWebhookHeaders,
} from '../support/payments.js';

// A Standard Webhooks secret (whsec_ + base64 of random bytes) and a plain one, configured together as in a rotation.
const WHSEC = `whsec_${randomBytes(24).toString('base64')}`;
const PLAIN = 'plain-rotation-secret-0123456789abcdef';
const THIRD = `whsec_${randomBytes(24).toString('base64')}`;

const errand = await startTestErrand(t, testEnv(t, { PAYMENT_WEBHOOK_SECRET: `${WHSEC}  ${PLAIN}` }));
const { app, deps } = errand;
const statusOf = async (id: string) =>
  (await deps.db.selectFrom('orders').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const msgId = () => `msg_${randomBytes(10).toString('hex')}`;

t.test('Standard Webhooks: a correctly signed event with a body id → 200 and paid', async (t) => {
  const order = await createOrder(app, { email: 'sw1@example.com' });
  const raw = JSON.stringify(paymentEvent(order));
  const res = await postWebhook(app, raw, standardWebhookHeaders(raw, { secret: WHSEC, id: msgId() }));
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { received: true });
  t.equal(await statusOf(order.id), 'paid');
});

t.test('Standard Webhooks without a body id: the event id is webhook-id; its replay is a duplicate', async (t) => {
  const order = await createOrder(app, { email: 'sw2@example.com' });
  const { id: _bodyId, ...withoutId } = paymentEvent(order, 'payment.failed');
  const raw = JSON.stringify(withoutId);
  const id = msgId();
  const res = await postWebhook(app, raw, standardWebhookHeaders(raw, { secret: WHSEC, id }));
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { received: true });
  t.equal(await statusOf(order.id), 'failed');
  const recorded = await deps.db
    .selectFrom('payment_events')
    .select(['event_id', 'transitioned'])
    .where('order_id', '=', order.id)
    .execute();
  t.same(recorded, [{ event_id: id, transitioned: true }], 'recorded under the webhook-id');

  // The provider retries the same message: same webhook-id, fresh timestamp and signature.
  const replay = await postWebhook(
    app,
    raw,
    standardWebhookHeaders(raw, { secret: WHSEC, id, timestamp: Math.floor(Date.now() / 1000) + 1 }),
  );
  t.same(replay.json(), { received: true, duplicate: true });

  // A later succeeded event without body id pays it (late success), under its own webhook-id.
  const { id: _other, ...success } = paymentEvent(order);
  const successRaw = JSON.stringify(success);
  const paid = await postWebhook(app, successRaw, standardWebhookHeaders(successRaw, { secret: WHSEC, id: msgId() }));
  t.same(paid.json(), { received: true });
  t.equal(await statusOf(order.id), 'paid');
});

t.test('no body id and no webhook-id header: 400', async (t) => {
  const order = await createOrder(app, { email: 'noid@example.com' });
  const { id: _bodyId, ...withoutId } = paymentEvent(order);
  const raw = JSON.stringify(withoutId);
  const res = await sendWebhook(app, raw, { secret: PLAIN });
  t.equal(res.statusCode, 400);
  t.match(res.json(), { message: /id/ });
  t.equal(await statusOf(order.id), 'pending');
});

t.test('Standard Webhooks refusals: wrong signature, stale timestamp, missing headers → 401, nothing changes', async (t) => {
  const order = await createOrder(app, { email: 'sw-bad@example.com' });
  const raw = JSON.stringify(paymentEvent(order));
  const id = msgId();
  const now = Math.floor(Date.now() / 1000);
  const good = standardWebhookHeaders(raw, { secret: WHSEC, id, timestamp: now });
  const without = (name: string) => Object.fromEntries(Object.entries(good).filter(([key]) => key !== name));
  const cases: Array<[string, Record<string, string>, string?]> = [
    ['signed with an unknown secret', standardWebhookHeaders(raw, { secret: THIRD, id, timestamp: now })],
    ['signature of another webhook-id', { ...good, 'webhook-id': msgId() }],
    ['signature of another timestamp', { ...good, 'webhook-timestamp': String(now - 1) }],
    ['timestamp 301 s old', standardWebhookHeaders(raw, { secret: WHSEC, id, timestamp: now - 301 })],
    ['timestamp 301 s ahead', standardWebhookHeaders(raw, { secret: WHSEC, id, timestamp: now + 302 })],
    ['body altered after signing', good, raw.replace('"amount":1999', '"amount":1998')],
    ['no webhook-signature', without('webhook-signature')],
    ['no webhook-timestamp', without('webhook-timestamp')],
    ['no webhook-id', without('webhook-id')],
    ['signature not base64 of 32 bytes', { ...good, 'webhook-signature': 'v1,abcd' }],
    ['only an unknown version', { ...good, 'webhook-signature': good['webhook-signature'].replace('v1,', 'v2,') }],
    ['timestamp not digits', { ...good, 'webhook-timestamp': `${now}.5` }],
  ];
  for (const [name, headers, body] of cases) {
    const res = await postWebhook(app, body ?? raw, headers);
    t.equal(res.statusCode, 401, name);
    t.match(res.json(), { statusCode: 401, error: 'Unauthorized', message: /webhook-/ }, name);
  }
  t.equal(await statusOf(order.id), 'pending');
  t.equal(
    (await deps.db.selectFrom('payment_events').select('event_id').where('order_id', '=', order.id).execute()).length,
    0,
    'nothing recorded',
  );

  // Several signatures in one header (space-separated): one valid is enough; v1a (asymmetric) entries are skipped.
  const third = standardWebhookHeaders(raw, { secret: THIRD, id, timestamp: now })['webhook-signature'];
  const several = { ...good, 'webhook-signature': `v1a,${'A'.repeat(86)}== ${third} ${good['webhook-signature']}` };
  const ok = await postWebhook(app, raw, several);
  t.equal(ok.statusCode, 200, ok.body);
  t.equal(await statusOf(order.id), 'paid');
});

t.test('rotation: either configured secret signs, in either scheme; a third one does not', async (t) => {
  for (const [name, secret, expected] of [
    ['whsec_ secret', WHSEC, 200],
    ['plain secret', PLAIN, 200],
    ['a third secret', THIRD, 401],
  ] as const) {
    const order = await createOrder(app, { email: 'rotation@example.com' });
    const timestamped = paymentEvent(order, 'payment.expired');
    const res = await sendWebhook(app, timestamped, { secret });
    t.equal(res.statusCode, expected, `t=,v1= scheme, ${name}`);
    const other = await createOrder(app, { email: 'rotation@example.com' });
    const raw = JSON.stringify(paymentEvent(other, 'payment.expired'));
    const standard = await postWebhook(app, raw, standardWebhookHeaders(raw, { secret, id: eventId() }));
    t.equal(standard.statusCode, expected, `Standard Webhooks, ${name}`);
    const status = expected === 200 ? 'expired' : 'pending';
    t.equal(await statusOf(order.id), status);
    t.equal(await statusOf(other.id), status);
  }

  // Both secrets' signatures in one t=,v1= header, as a sender mid-rotation does.
  const order = await createOrder(app, { email: 'rotation@example.com' });
  const raw = JSON.stringify(paymentEvent(order));
  const now = Math.floor(Date.now() / 1000);
  const header = `${signatureHeader(raw, { secret: THIRD, timestamp: now })},v1=${signatureHeader(raw, { secret: PLAIN, timestamp: now }).split('v1=')[1]}`;
  t.equal((await sendWebhook(app, raw, { header })).statusCode, 200, 'one matching v1 among several');
});

t.test("the Standard Webhooks specification's own example verifies", async (t) => {
  const verifier = createWebhookVerifier(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']);
  const headers = {
    'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
    'webhook-timestamp': '1614265330',
    'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
  };
  const body = Buffer.from('{"test": 2432232314}');
  t.match(verifier.verify(headers, body, 1614265330_000), { ok: true, scheme: 'standard-webhooks' });
  t.match(verifier.verify(headers, body, (1614265330 + 301) * 1000), { ok: false, reason: 'timestamp' });
});

t.test('no secret and no signature in the logs', async (t) => {
  const raw = errand.logs.raw.join('\n');
  for (const secret of [WHSEC, PLAIN, THIRD, WHSEC.slice(6)]) t.notOk(raw.includes(secret));
  t.notOk(raw.includes('v1,'), 'no signature header value');
});
