import t from 'tap';
import { startPrivateRedis, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// Its own Redis, so the test can kill it.
const redis = await startPrivateRedis(t);
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', REDIS_URL: redis.url, RATE_LIMIT_MAX: '5' }));
const { app, deps } = errand;

t.test('with Redis unreachable: signup still answers 202, and the limit holds per process', async (t) => {
  await redis.kill();
  await waitFor(() => (deps.redis.status !== 'ready' ? true : undefined), 10000, 'producer connection down');
  for (let i = 1; i <= 5; i += 1) {
    const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `down-${i}@example.com` }, remoteAddress: '10.9.0.1' });
    t.equal(res.statusCode, 202, `signup ${i} accepted (job kept in the outbox)`);
  }
  const sixth = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'down-6@example.com' }, remoteAddress: '10.9.0.1' });
  t.equal(sixth.statusCode, 429, 'not "no limit" while Redis is away');
  t.ok(Number(sixth.headers['retry-after']) >= 1, 'Retry-After');
  const outbox = await deps.db.selectFrom('outbox').select((eb) => eb.fn.countAll<string>().as('n')).where('published_at', 'is', null).executeTakeFirstOrThrow();
  t.equal(Number(outbox.n), 5, 'the accepted signups wait in the outbox');
  t.ok(errand.logs.lines().some((line) => /counting per process/.test(String(line.msg))), 'the fallback is logged');

  // Back: the outbox drains and the count is in Redis again (and teardown closes cleanly).
  await redis.start();
  await waitFor(() => (deps.redis.status === 'ready' ? true : undefined), 15000, 'producer connection back');
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'back@example.com' }, remoteAddress: '10.9.0.2' });
  t.equal(res.statusCode, 202);
});
