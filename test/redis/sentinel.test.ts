// errand behind Sentinel: the primary dies mid-burst of signups; after the failover every accepted signup's email arrives once.
import t from 'tap';
import { sleep, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { probeRedis, SENTINEL_MASTER_NAME, settledEmailsPerAddress, startRedisSentinel } from '../support/redis-topologies.js';

const SIGNUPS = 60;

t.test('kill the primary mid-burst: every 2xx signup gets its email exactly once', async (t) => {
  const redis = await startRedisSentinel(t, { replicas: 1, sentinels: 3, downAfterMs: 1000, failoverTimeoutMs: 3000 });
  const smtp = await startSmtpServer(t);
  smtp.delayReplies(50);
  const errand = await startTestErrand(
    t,
    testEnv(t, {
      REDIS_URL: redis.url,
      SMTP_URL: smtp.url,
      EMAIL_CONCURRENCY: '4',
      WORKER_LOCK_DURATION_MS: '4000',
      WORKER_STALLED_INTERVAL_MS: '2000',
      LOG_LEVEL: 'warn',
    }),
  );
  const { app, deps } = errand;
  t.notMatch(errand.config.QUEUE_PREFIX, /[{}]/, 'no hash tag behind Sentinel: one primary holds everything');
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');
  t.equal(await redis.primaryPort(), redis.primary.port);

  const accepted: string[] = [];
  const refused: number[] = [];
  const signup = async (i: number) => {
    const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `burst-${i}@example.com` } });
    if (res.statusCode >= 200 && res.statusCode < 300) accepted.push(`burst-${i}@example.com`);
    else refused.push(res.statusCode);
  };

  // A steady burst: a signup every 20 ms; the primary is killed a third of the way in.
  let killedAt = -1;
  let killTime = 0;
  for (let i = 0; i < SIGNUPS; i += 1) {
    if (i === SIGNUPS / 3) {
      // The burst pauses until an email is out: on a loaded machine 20 signups can take less time than the first
      // email (seen: '0 emails were out before the kill'), and the kill must come while jobs flow.
      await waitFor(() => smtp.received.length > 0 || undefined, 20000, 'an email out before the kill');
      killedAt = smtp.received.length;
      await redis.primary.kill();
      killTime = Date.now();
    }
    await Promise.all([signup(i), sleep(20)]);
  }
  t.ok(killedAt > 0, `${killedAt} emails were out before the kill`);
  t.same(refused, [], 'every signup answered 2xx (the outbox holds what Redis could not take)');

  await waitFor(
    async () => ((await redis.primaryPort()) !== redis.primary.port ? true : undefined),
    30000,
    'sentinels promote the replica',
  );
  t.comment(`replica promoted ${Date.now() - killTime} ms after the kill (down-after 1000 ms)`);
  t.equal(await redis.primaryPort(), redis.replicas[0].port, 'the replica is the new primary');
  await waitFor(
    async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined,
    30000,
    'ready on the new primary',
  );
  t.comment(`errand ready on the new primary ${Date.now() - killTime} ms after the kill`);

  await waitFor(
    () => (new Set(smtp.received.map((e) => e.to[0])).size >= accepted.length ? true : undefined),
    90000,
    `${accepted.length} distinct emails`,
  );
  t.comment(`last email ${Date.now() - killTime} ms after the kill`);
  // Nothing else may arrive: a job whose lock lapsed would be found by the next stalled check.
  const perAddress = await settledEmailsPerAddress(deps.queues, smtp.received);
  t.same([...perAddress.keys()].sort(), [...accepted].sort(), 'an email for every accepted signup, none for anything else');
  t.same(
    [...perAddress.entries()].filter(([, n]) => n > 1),
    [],
    'no address got two emails',
  );
  const unpublished = await deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
  t.equal(unpublished.length, 0, 'the outbox is drained');
});

t.test('a forced failover, the old primary still up (demoted): errand moves to the new primary', async (t) => {
  const redis = await startRedisSentinel(t, { replicas: 1, sentinels: 3, downAfterMs: 1000, failoverTimeoutMs: 3000 });
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { REDIS_URL: redis.url, SMTP_URL: smtp.url, LOG_LEVEL: 'warn' }));
  const { app } = errand;
  const signup = (email: string) => app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');
  t.equal((await signup('before@example.com')).statusCode, 202);
  await smtp.waitForEmails(1, 15000);

  // The sentinels promote the replica and turn the old primary, which keeps running, into a replica.
  await probeRedis(redis.sentinels[0].port, (sentinel) => sentinel.call('SENTINEL', 'FAILOVER', SENTINEL_MASTER_NAME));
  await waitFor(async () => ((await redis.primaryPort()) === redis.replicas[0].port ? true : undefined), 30000, 'the replica promoted');
  // While demoting it, the sentinels close the old primary's client connections: a probe cut that way is retried.
  const demoted = await waitFor(
    async () => {
      const role = await probeRedis(redis.primary.port, (old) => old.call('ROLE') as Promise<[string]>).catch(() => undefined);
      return role?.[0] === 'slave' ? true : undefined;
    },
    30000,
    'the old primary demoted',
  );
  t.ok(demoted, 'the old primary is up, now a replica');

  await waitFor(
    async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined,
    30000,
    'ready on the new primary',
  );
  t.equal((await signup('after@example.com')).statusCode, 202);
  const received = await smtp.waitForEmails(2, 30000);
  t.same(received.map((email) => email.to[0]).sort(), ['after@example.com', 'before@example.com'], 'the email after the failover went out');
});

t.test('readiness names redis when no sentinel answers', async (t) => {
  const redis = await startRedisSentinel(t, { replicas: 0, sentinels: 1 });
  const errand = await startTestErrand(t, testEnv(t, { REDIS_URL: redis.url, ROLE: 'api', LOG_LEVEL: 'fatal' }));
  await waitFor(async () => (await errand.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');
  await Promise.all([redis.primary.kill(), ...redis.sentinels.map((s) => s.kill())]);
  const res = await waitFor(
    async () => {
      const answer = await errand.app.inject({ method: 'GET', url: '/readyz' });
      return answer.statusCode === 503 ? answer : undefined;
    },
    15000,
    'readyz 503',
  );
  t.same(res.json(), { status: 'unavailable', checks: { postgres: 'ok', redis: 'unreachable' } });
});
