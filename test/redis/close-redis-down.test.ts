// A worker asked to stop while its Redis is away stops within seconds, queue event readers and all.
import t from 'tap';
import { startPrivateRedis, startTestErrand, testEnv, waitFor, within } from '../support/helpers.js';

t.test('close() with Redis down ends within seconds', async (t) => {
  const redis = await startPrivateRedis(t);
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'worker', REDIS_URL: redis.url, SHUTDOWN_GRACE_MS: '1000' }));
  await waitFor(async () => (await errand.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');
  await redis.kill();
  // Every connection, the blocking ones included, sees the same reset; the producer's is the one errand exposes.
  await waitFor(() => (errand.deps.redis.status !== 'ready' ? true : undefined), 10000, 'the producer connection down');
  await waitFor(() => (errand.deps.workerRedis.status !== 'ready' ? true : undefined), 10000, 'the worker connection down');
  const started = Date.now();
  // The workers' pause waits out the 1 s grace (it too disconnects a reconnecting connection), their close 1 s more,
  // the queue event readers 1 s: well under 10 s. A QueueEvents' close() alone waits for ever here.
  await within(errand.close(), 10000, 'errand.close() with Redis down');
  t.comment(`closed in ${Date.now() - started} ms`);
  t.ok(
    errand.logs.lines().some((line) => line.msg === 'closing' && line.step === 'done'),
    'every step of close() ran',
  );
  const forced = errand.logs.lines().find((line) => /forcing the worker closed/.test(String(line.msg)));
  t.not(forced?.redisStatus, 'ready', 'the forced close says Redis was not connected');
  t.ok(forced?.redisStatus, 'and names the connection status');
});
