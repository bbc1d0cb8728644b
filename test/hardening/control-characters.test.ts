import t from 'tap';

type Tap = Pick<typeof t, 'equal' | 'match'>;
import { startTestErrand, testEnv } from '../support/helpers.js';
import { WEBHOOK_SECRET, createOrder, eventId, sendWebhook } from '../support/payments.js';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, ADMIN_TOKEN }));
const { app, deps } = errand;
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function rowCounts() {
  const count = async (table: 'users' | 'orders' | 'payment_events' | 'outbox') =>
    Number(
      (
        await deps.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  return {
    users: await count('users'),
    orders: await count('orders'),
    events: await count('payment_events'),
    outbox: await count('outbox'),
  };
}

function expect400(
  t: Tap,
  res: { statusCode: number; json(): { statusCode: number; message: string } },
  what: string,
  message = /control characters/,
) {
  t.equal(res.statusCode, 400, what);
  t.match(res.json().message, message, `${what}: ${res.json().message}`);
}

const order = await createOrder(app, { email: 'buyer@example.com' });
const before = await rowCounts();

// Test names show code points: a raw U+2028 would break the TAP stream itself.
const codes = (text: string) => [...text].map((c) => `U+${c.codePointAt(0)!.toString(16).padStart(4, '0')}`).join(' ');

// NUL, ESC, DEL, a C1 control, and (for the name) line breaks.
const BAD = ['\u0000', '\u001b', '\u007f', '\u0085'];

t.test('signup: email and name', async (t) => {
  for (const bad of BAD) {
    expect400(
      t,
      await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `a${bad}b@example.com` } }),
      `email with ${codes(bad)}`,
      /email/,
    );
    expect400(
      t,
      await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com', name: `Al${bad}ice` } }),
      `name with ${codes(bad)}`,
    );
  }
  for (const lineBreak of ['\n', '\r', '\u2028', '\u2029']) {
    expect400(
      t,
      await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com', name: `Alice${lineBreak}Bcc: x` } }),
      `name with ${codes(lineBreak)}`,
      /line breaks/,
    );
  }
  const tab = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'tab@example.com', name: 'Alice\tLiddell' } });
  t.equal(tab.statusCode, 202, 'a tab is fine');
});

t.test('verify-email token', async (t) => {
  expect400(
    t,
    await app.inject({ method: 'GET', url: `/auth/verify-email?token=${encodeURIComponent('abc\u0000def')}` }),
    'token with NUL',
  );
});

t.test('orders: email, currency; tracking id', async (t) => {
  expect400(
    t,
    await app.inject({ method: 'POST', url: '/orders', payload: { email: 'b\u0000@example.com', amount: 100, currency: 'USD' } }),
    'order email with NUL',
    /email/,
  );
  expect400(
    t,
    await app.inject({ method: 'POST', url: '/orders', payload: { email: 'b@example.com', amount: 100, currency: 'US\u0000' } }),
    'currency with NUL',
    /currency/,
  );
  expect400(
    t,
    await app.inject({ method: 'GET', url: `/orders/${encodeURIComponent('abc\u0000')}/tracking?token=x` }),
    'tracking id with NUL',
  );
});

t.test('webhook: id and providerRef', async (t) => {
  const good = { type: 'payment.succeeded', data: { providerRef: order.providerRef, amount: order.amount, currency: order.currency } };
  expect400(t, await sendWebhook(app, { ...good, id: `evt_\u0000${eventId()}` }), 'event id with NUL');
  expect400(
    t,
    await sendWebhook(app, { ...good, id: eventId(), data: { ...good.data, providerRef: `${order.providerRef}\u0000` } }),
    'providerRef with NUL',
  );
  expect400(t, await sendWebhook(app, { ...good, id: `evt_\u001b[31m` }), 'event id with ESC');
  // An unknown type is recorded as given (payment_events.type): its control characters are a 400 too, not a 500.
  expect400(t, await sendWebhook(app, { ...good, id: eventId(), type: 'refund.created\u0000' }), 'unknown type with NUL');
  expect400(t, await sendWebhook(app, { ...good, id: eventId(), type: 'payment.succeeded\u0000' }), 'known type + NUL');
  expect400(t, await sendWebhook(app, { id: eventId(), type: '\u007frefund' }), 'type with DEL, no data');
  expect400(t, await sendWebhook(app, { id: eventId(), type: 'refund\u0085' }), 'type with a C1 control');
});

t.test('admin routes: queue and job id', async (t) => {
  expect400(
    t,
    await app.inject({ method: 'GET', url: `/admin/queues/${encodeURIComponent('email\u0000')}/failed`, headers: admin }),
    'queue with NUL',
  );
  expect400(
    t,
    await app.inject({ method: 'POST', url: `/admin/queues/email/jobs/${encodeURIComponent('1\u0000')}/retry`, headers: admin }),
    'job id with NUL',
  );
});

t.test('nothing was written by any refused request', async (t) => {
  const after = await rowCounts();
  t.same({ ...after, users: after.users - 1, outbox: after.outbox - 1 }, before, 'only the tab signup wrote a user and its outbox row');
});
