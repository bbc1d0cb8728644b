import t from 'tap';
import { createHmac } from 'node:crypto';
import { createDb } from '../../src/db/pool.js';
import { createOrder, eventId, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';
import { freshDatabaseUrl, startTcpProxy, startTestErrand, testEnv } from '../support/helpers.js';

const hmacHex = (secret: string, timestamp: number, raw: string) =>
  createHmac('sha256', secret).update(`${timestamp}.`).update(raw).digest('hex');

t.test('several v1= signatures (a secret rotation): any one match is enough, none is 401', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
  const timestamp = Math.floor(Date.now() / 1000);
  const signedWith = (body: unknown, secrets: string[], extra = '') => {
    const raw = JSON.stringify(body);
    const header = [`t=${timestamp}`, ...secrets.map((secret) => `v1=${hmacHex(secret, timestamp, raw)}`)].join(',') + extra;
    return { raw, header };
  };
  const order = await createOrder(errand.app, { email: 'rotation@example.com' });

  for (const [label, secrets, extra] of [
    ['old secret first, current second', ['previous-secret', WEBHOOK_SECRET], ''],
    ['current secret first, old second', [WEBHOOK_SECRET, 'previous-secret'], ''],
    ['an unknown scheme alongside', [WEBHOOK_SECRET], ',v0=deadbeef'],
  ] as const) {
    const body = paymentEvent(order, 'payment.succeeded', eventId());
    const { raw, header } = signedWith(body, [...secrets], extra);
    const res = await sendWebhook(errand.app, raw, { header });
    t.equal(res.statusCode, 200, label);
  }

  const body = paymentEvent(order, 'payment.failed', eventId());
  const wrong = signedWith(body, ['previous-secret', 'another-old-secret']);
  const refused = await sendWebhook(errand.app, wrong.raw, { header: wrong.header });
  t.equal(refused.statusCode, 401, 'two signatures, neither with the current secret');
  // One malformed v1 among good ones makes the header malformed: refused, not skipped.
  const good = signedWith(body, [WEBHOOK_SECRET]);
  const malformed = await sendWebhook(errand.app, good.raw, { header: `${good.header},v1=nothex` });
  t.equal(malformed.statusCode, 401, 'a malformed v1 is refused');
  const event = await errand.deps.db.selectFrom('payment_events').select('event_id').where('event_id', '=', body.id).executeTakeFirst();
  t.equal(event, undefined, 'refused events are not recorded');
});

t.test('webhook with PostgreSQL down: 503, and nothing is written', async (t) => {
  // errand reaches PostgreSQL through a proxy this test can cut; the test itself checks the rows directly.
  const direct = freshDatabaseUrl(t);
  const proxy = await startTcpProxy(t, { host: '127.0.0.1', port: Number(new URL(direct).port || 5432) });
  const viaProxy = new URL(direct);
  viaProxy.port = String(proxy.port);
  const errand = await startTestErrand(
    t,
    testEnv(t, { ROLE: 'api', PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, DATABASE_URL: viaProxy.toString() }),
  );
  const order = await createOrder(errand.app, { email: 'pg-down@example.com' });

  await proxy.cut();
  const event = paymentEvent(order);
  const res = await sendWebhook(errand.app, event);
  t.equal(res.statusCode, 503, 'the provider is told to retry later');
  t.same(res.json(), { statusCode: 503, error: 'Service Unavailable', message: 'database unavailable, try again later' });

  const db = createDb(direct, 1);
  t.teardown(() => db.destroy());
  t.same(await db.selectFrom('orders').select('status').where('id', '=', order.id).execute(), [{ status: 'pending' }], 'order untouched');
  t.same(await db.selectFrom('payment_events').select('event_id').execute(), [], 'event not recorded: the retry will be processed');
  t.same(await db.selectFrom('outbox').select('id').execute(), [], 'no email queued');
});
