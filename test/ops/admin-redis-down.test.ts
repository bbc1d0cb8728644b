import t from 'tap';
import { startPrivateRedis, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

t.test('with Redis down the admin API answers 503 at once, after checking the token', async (t) => {
  const redis = await startPrivateRedis(t);
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', REDIS_URL: redis.url, ADMIN_TOKEN }));
  const { app, deps } = errand;
  t.equal((await app.inject({ method: 'GET', url: '/admin/queues', headers: bearer })).statusCode, 200, 'served while Redis is up');

  await redis.kill();
  await waitFor(() => deps.redis.status !== 'ready' || undefined, 5000, 'the producer connection to notice');
  for (const [method, url] of [['GET', '/admin/queues'], ['GET', '/admin/queues/email/failed'], ['POST', '/admin/queues/email/jobs/1/retry'], ['POST', '/admin/sweeps']] as const) {
    const res = await app.inject({ method, url, headers: bearer });
    t.equal(res.statusCode, 503, `${method} ${url}`);
    t.same(res.json(), { statusCode: 503, error: 'Service Unavailable', message: 'redis unavailable, try again later' });
  }
  t.equal((await app.inject({ method: 'GET', url: '/admin/queues' })).statusCode, 401, 'no token: 401 still comes first');

  await redis.start();
  await waitFor(async () => ((await app.inject({ method: 'GET', url: '/admin/queues', headers: bearer })).statusCode === 200 ? true : undefined), 15000, '200 once Redis is back');
  t.pass('served again once Redis is back');
});
