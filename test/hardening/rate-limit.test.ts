import t from 'tap';
import { buildApp } from '../../src/app.js';
import { signupThrottleKey } from '../../src/signup/throttle.js';
import { startTestErrand, testEnv } from '../support/helpers.js';
import { WEBHOOK_SECRET, eventId, sendWebhook } from '../support/payments.js';

// ROLE api: no worker sends anything; only the HTTP limits are under test.
const errand = await startTestErrand(
  t,
  testEnv(t, { ROLE: 'api', RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '60000', PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }),
);
const { app, deps } = errand;

const signup = (email: string, remoteAddress: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/auth/signup', payload: { email }, remoteAddress, headers });

t.test('the 6th signup from one client in a window → 429 with Retry-After, in Fastify error shape', async (t) => {
  for (let i = 1; i <= 5; i += 1) {
    const res = await signup(`limit-${i}@example.com`, '10.0.0.1');
    t.equal(res.statusCode, 202, `signup ${i}`);
  }
  const sixth = await signup('limit-6@example.com', '10.0.0.1');
  t.equal(sixth.statusCode, 429);
  const retryAfter = Number(sixth.headers['retry-after']);
  t.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${sixth.headers['retry-after']} s`);
  t.same(Object.keys(sixth.json()).sort(), ['error', 'message', 'statusCode']);
  t.equal(sixth.json().error, 'Too Many Requests');
  const user = await deps.db.selectFrom('users').select('id').where('email', '=', 'limit-6@example.com').executeTakeFirst();
  t.notOk(user, 'the limited request wrote nothing');

  const other = await signup('limit-other@example.com', '10.0.0.2');
  t.equal(other.statusCode, 202, 'another client is not limited');
});

t.test('a forged X-Forwarded-For does not reset the limit unless TRUST_PROXY', async (t) => {
  for (let i = 1; i <= 5; i += 1) t.equal((await signup(`xff-${i}@example.com`, '10.0.1.1')).statusCode, 202);
  const forged = await signup('xff-6@example.com', '10.0.1.1', { 'x-forwarded-for': '203.0.113.77' });
  t.equal(forged.statusCode, 429, 'TRUST_PROXY=false: the socket address counts');

  // Same deps (and Redis), trusting the proxy: each X-Forwarded-For address is its own client.
  const proxied = await buildApp({ ...deps, config: { ...deps.config, TRUST_PROXY: '10.0.2.1' } });
  t.teardown(() => proxied.close());
  for (let i = 1; i <= 5; i += 1) {
    const res = await proxied.inject({
      method: 'POST',
      url: '/auth/signup',
      payload: { email: `p-${i}@example.com` },
      remoteAddress: '10.0.2.1',
      headers: { 'x-forwarded-for': '198.51.100.1' },
    });
    t.equal(res.statusCode, 202);
  }
  const limited = await proxied.inject({
    method: 'POST',
    url: '/auth/signup',
    payload: { email: 'p-6@example.com' },
    remoteAddress: '10.0.2.1',
    headers: { 'x-forwarded-for': '198.51.100.1' },
  });
  t.equal(limited.statusCode, 429, 'the forwarded client is limited');
  const next = await proxied.inject({
    method: 'POST',
    url: '/auth/signup',
    payload: { email: 'p-7@example.com' },
    remoteAddress: '10.0.2.1',
    headers: { 'x-forwarded-for': '198.51.100.2' },
  });
  t.equal(next.statusCode, 202, 'another forwarded client behind the trusted proxy is not');
});

t.test('TRUST_PROXY as a hop count: a forged left-most X-Forwarded-For does not pick the client address', async (t) => {
  // One proxy in front appends the address it saw; whatever the client wrote before that is not believed.
  const proxied = await buildApp({ ...deps, config: { ...deps.config, TRUST_PROXY: '1', RATE_LIMIT_MAX: 3 } });
  t.teardown(() => proxied.close());
  const statuses: number[] = [];
  for (let i = 1; i <= 5; i += 1) {
    const res = await proxied.inject({
      method: 'POST',
      url: '/auth/signup',
      payload: { email: `hop-${i}@example.com` },
      remoteAddress: '10.0.6.1',
      headers: { 'x-forwarded-for': `203.0.113.${i}, 198.51.100.66` },
    });
    statuses.push(res.statusCode);
  }
  t.same(statuses, [202, 202, 202, 429, 429], 'five forged requests from one client: the limit of 3 holds');
});

t.test('the count is in Redis: a second app (another replica) sees it', async (t) => {
  const replica = await buildApp(deps);
  t.teardown(() => replica.close());
  for (let i = 1; i <= 3; i += 1) t.equal((await signup(`r-${i}@example.com`, '10.0.3.1')).statusCode, 202);
  for (let i = 4; i <= 5; i += 1) {
    const res = await replica.inject({
      method: 'POST',
      url: '/auth/signup',
      payload: { email: `r-${i}@example.com` },
      remoteAddress: '10.0.3.1',
    });
    t.equal(res.statusCode, 202);
  }
  const sixth = await replica.inject({
    method: 'POST',
    url: '/auth/signup',
    payload: { email: 'r-6@example.com' },
    remoteAddress: '10.0.3.1',
  });
  t.equal(sixth.statusCode, 429);
});

t.test('a burst from one client, at once on two replicas: exactly the limit passes, in fewer Redis commands', async (t) => {
  const replica = await buildApp(deps);
  t.teardown(() => replica.close());
  // Counts the store's commands on the real connection (the store calls deps.redis.eval at each flush).
  const evalOnce = deps.redis.eval.bind(deps.redis);
  let evals = 0;
  deps.redis.eval = ((...args: Parameters<typeof evalOnce>) => {
    evals += 1;
    return evalOnce(...args);
  }) as typeof deps.redis.eval;
  t.teardown(() => {
    deps.redis.eval = evalOnce;
  });
  const burst = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      (i % 2 === 0 ? app : replica).inject({
        method: 'POST',
        url: '/auth/signup',
        payload: { email: `burst-${i}@example.com` },
        remoteAddress: '10.0.4.1',
      }),
    ),
  );
  const codes = burst.map((res) => res.statusCode);
  t.equal(codes.filter((code) => code === 202).length, 5, 'five accepted');
  t.equal(codes.filter((code) => code === 429).length, 25, 'the rest refused');
  const created = await deps.db.selectFrom('users').select('id').where('email', 'like', 'burst-%').execute();
  t.equal(created.length, 5, 'only the accepted ones wrote a user');
  t.ok(evals < 30, `30 requests counted in ${evals} Redis command(s): hits arriving together share one INCRBY`);
});

t.test('POST /orders is limited; the webhook is not', async (t) => {
  const order = (i: number) =>
    app.inject({
      method: 'POST',
      url: '/orders',
      payload: { email: `o-${i}@example.com`, amount: 100, currency: 'USD' },
      remoteAddress: '10.0.4.1',
    });
  for (let i = 1; i <= 5; i += 1) t.equal((await order(i)).statusCode, 201);
  t.equal((await order(6)).statusCode, 429);
  for (let i = 1; i <= 7; i += 1) {
    const res = await sendWebhook(app, {
      id: eventId(),
      type: 'payment.failed',
      data: { providerRef: `pay_unknown_${i}`, amount: 1, currency: 'USD' },
    });
    t.equal(res.statusCode, 200, `webhook ${i}`);
  }
});

t.test('the 60 s signup throttle ignores a +tag; the email still goes to the address as given', async (t) => {
  t.equal(signupThrottleKey('Victim+1@Example.com'), 'victim@example.com');
  t.equal(signupThrottleKey('victim@example.com'), 'victim@example.com');
  const first = await signup('victim+1@example.com', '10.0.5.1');
  const second = await signup('victim+2@example.com', '10.0.5.2');
  const third = await signup('victim@example.com', '10.0.5.3');
  t.same([first.statusCode, second.statusCode, third.statusCode], [202, 202, 202], 'same answer for all');
  const rows = await deps.db
    .selectFrom('outbox')
    .innerJoin('users', (join) =>
      join.on(
        (eb) => eb.ref('users.id'),
        '=',
        (eb) => eb.cast(eb.fn('jsonb_extract_path_text', [eb.ref('outbox.payload'), eb.val('userId')]), 'bigint'),
      ),
    )
    .select('users.email')
    .where('users.email', 'like', 'victim%')
    .execute();
  t.same(
    rows.map((row) => row.email),
    ['victim+1@example.com'],
    'one verification email among the tags, to the address as given',
  );
});
