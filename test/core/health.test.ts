import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { createDeps } from '../../src/deps.js';
import { buildApp } from '../../src/app.js';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { waitUntilConnected } from '../../src/core/redis.js';
import { captureLogs, freePort, REDIS_URL, startTestErrand, testEnv, uniqueName } from '../support/helpers.js';

t.test('healthz and readyz with PostgreSQL and Redis up', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const health = await errand.app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200);
  t.same(health.json(), { status: 'ok' });
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ready', checks: { postgres: 'ok', redis: 'ok' } });
});

t.test('with PostgreSQL unreachable: readyz 503 naming it, signup 503 and nothing queued', async (t) => {
  const port = await freePort();
  const prefix = uniqueName('t');
  const config = loadConfig({
    DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`,
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    ROLE: 'api',
    LOG_LEVEL: 'fatal',
  });
  const deps = createDeps(config, { logDestination: captureLogs().stream });
  const app = await buildApp(deps);
  t.ok(await waitUntilConnected(deps.redis, 5000), 'redis connected');
  t.teardown(async () => {
    await app.close();
    await deps.queues[EMAIL_QUEUE].obliterate({ force: true });
    await deps.close();
  });

  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.redis, 'ok');
  t.equal(ready.json().checks.postgres, 'unreachable');

  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com' } });
  t.equal(signup.statusCode, 503);
  t.match(signup.json(), { statusCode: 503, error: 'Service Unavailable' });
  const counts = await deps.queues[EMAIL_QUEUE].getJobCounts();
  t.equal(
    Object.values(counts).reduce((a, b) => a + b, 0),
    0,
    'nothing queued',
  );
});

t.test('with Redis unreachable: readyz 503 naming it', async (t) => {
  const port = await freePort();
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', REDIS_URL: `redis://127.0.0.1:${port}`, LOG_LEVEL: 'fatal' }));
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.postgres, 'ok');
  t.equal(ready.json().checks.redis, 'unreachable');
  // And signups still succeed: the outbox keeps the job.
  const signup = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com' } });
  t.equal(signup.statusCode, 202);
});
