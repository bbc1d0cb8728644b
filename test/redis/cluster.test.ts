// errand on a 3-primary Redis Cluster: every path that touches Redis, then a whole-cluster outage.
import t from 'tap';
import { Cluster } from 'ioredis';
import { EMAIL_QUEUE, PAYMENTS_RECONCILE_QUEUE, QUEUE_NAMES } from '../../src/queues.js';
import { syncSchedulers } from '../../src/core/scheduler-sync.js';
import { SCHEDULERS } from '../../src/schedulers.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor, within } from '../support/helpers.js';
import { createOrder, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';
import { startSimulator } from '../support/reconcile.js';
import { probeRedis, startRedisCluster } from '../support/redis-topologies.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

const cluster = await startRedisCluster(t, { primaries: 3 });
const smtp = await startSmtpServer(t);
const { sim, url: providerUrl } = await startSimulator(t);
const env = testEnv(t, {
  REDIS_URL: cluster.url,
  // The plain prefix an operator writes; errand tags it for the cluster.
  QUEUE_PREFIX: `errand${Date.now().toString(36)}`,
  SMTP_URL: smtp.url,
  PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET,
  PAYMENT_PROVIDER_URL: providerUrl,
  ADMIN_TOKEN,
  PAYMENTS_RECONCILE_ENABLED: 'true',
  JOB_ATTEMPTS: '1',
});
const errand = await startTestErrand(t, env);
const { app, deps } = errand;
const emailsTo = (address: string) => smtp.received.filter((e) => e.to[0] === address);

t.test('on a cluster the prefix is hash-tagged and every queue key sits in one slot', async (t) => {
  t.equal(errand.config.QUEUE_PREFIX, `{${env.QUEUE_PREFIX}}`);
  t.ok(deps.redis instanceof Cluster, 'the producer connection is a Cluster client');
  const started = errand.logs.lines().find((line) => line.msg === 'errand started');
  t.match(
    started,
    { queuePrefix: errand.config.QUEUE_PREFIX, redis: /^redis\+cluster:\/\/127\.0\.0\.1:\d+,/ },
    'the start line names the topology',
  );
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');
  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.same(ready.json(), { status: 'ready', checks: { postgres: 'ok', redis: 'ok' } });
});

t.test('signup → verification email', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'cluster-signup@example.com' } });
  t.equal(res.statusCode, 202);
  await waitFor(() => emailsTo('cluster-signup@example.com').length === 1 || undefined, 20000, 'verification email');
  t.match(emailsTo('cluster-signup@example.com')[0].text, /\/auth\/verify-email\?token=/);
});

t.test('webhook → tracking email', async (t) => {
  const order = await createOrder(app, { email: 'cluster-buyer@example.com' });
  const res = await sendWebhook(app, paymentEvent(order));
  t.equal(res.statusCode, 200);
  await waitFor(() => emailsTo('cluster-buyer@example.com').length === 1 || undefined, 20000, 'tracking email');
  t.match(emailsTo('cluster-buyer@example.com')[0].text, new RegExp(`/orders/${order.id}/tracking\\?token=`));
});

t.test('scheduler sync from two processes leaves one scheduler', async (t) => {
  // The first process synced at start; a second one starts on the same database and prefix, and both sync again at once.
  const second = await startTestErrand(t, { ...env, ROLE: 'worker' });
  await Promise.all([
    syncSchedulers(deps.queues, errand.config, deps.log, SCHEDULERS),
    syncSchedulers(second.deps.queues, second.config, second.deps.log, SCHEDULERS),
  ]);
  const schedulers = await deps.queues[PAYMENTS_RECONCILE_QUEUE].getJobSchedulers();
  t.equal(schedulers.length, 1, 'one scheduler');
  t.equal(schedulers[0].key, 'payments-reconcile');
  t.equal(await deps.queues[PAYMENTS_RECONCILE_QUEUE].getDelayedCount(), 1, 'one next run waiting');
  await within(second.close(), 30000, 'the second errand to close');
});

t.test('an admin sweep settles an order the provider reports paid', async (t) => {
  const order = await createOrder(app, { email: 'cluster-sweep@example.com' });
  sim.setPayment(order.providerRef, { status: 'succeeded', amount: order.amount, currency: order.currency });
  const res = await app.inject({ method: 'POST', url: '/admin/sweeps', headers: bearer });
  t.equal(res.statusCode, 202);
  const { jobId } = res.json<{ jobId: string }>();
  const job = await waitFor(
    async () => {
      const found = await deps.queues[PAYMENTS_RECONCILE_QUEUE].getJob(jobId);
      return found?.finishedOn ? found : undefined;
    },
    20000,
    'sweep job finished',
  );
  t.match(job.returnvalue, { paid: 1 });
  await waitFor(() => emailsTo('cluster-sweep@example.com').length === 1 || undefined, 20000, 'tracking email after the sweep');
});

t.test('the admin failed list reads failed jobs from the cluster', async (t) => {
  smtp.respondWith((to) => (to[0] === 'cluster-refused@example.com' ? { code: 550, message: 'mailbox unavailable' } : undefined));
  t.teardown(() => smtp.respondWith(undefined));
  await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'cluster-refused@example.com' } });
  const failed = await waitFor(
    async () => {
      const res = await app.inject({ method: 'GET', url: `/admin/queues/${EMAIL_QUEUE}/failed`, headers: bearer });
      // A 500 (a Redis command past the producer's 2 s commandTimeout on a loaded machine) is an answer to poll
      // again, not a page without `jobs` to crash on; the page's contents are checked below.
      if (res.statusCode !== 200) return undefined;
      const { jobs } = res.json<{ jobs: { name: string; reason: string }[] }>();
      return jobs.length > 0 ? jobs : undefined;
    },
    20000,
    'a failed job listed',
  );
  t.equal(failed.length, 1);
  t.match(failed[0], { name: 'email-verification', reason: /550/ });
});

t.test('admin queues, Bull Board and metrics read the cluster', async (t) => {
  const queues = await app.inject({ method: 'GET', url: '/admin/queues', headers: bearer });
  t.equal(queues.statusCode, 200);
  t.match(queues.json(), { queues: [{ name: EMAIL_QUEUE }, { name: PAYMENTS_RECONCILE_QUEUE }] });
  const basic = { authorization: `Basic ${Buffer.from(`ops:${ADMIN_TOKEN}`).toString('base64')}` };
  const board = await app.inject({ method: 'GET', url: '/admin/board/api/queues', headers: basic });
  t.equal(board.statusCode, 200);
  t.same(
    board
      .json<{ queues: { name: string }[] }>()
      .queues.map((q) => q.name)
      .sort(),
    [...QUEUE_NAMES].sort(),
    'every queue on the board',
  );
  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(metrics.statusCode, 200);
  t.match(
    metrics.body,
    new RegExp(`errand_queue_jobs\\{[^}]*queue="${EMAIL_QUEUE}"[^}]*state="failed"[^}]*\\} 1`),
    'queue depth per state, read from the cluster',
  );
});

t.test('the noeviction check asks every primary', async (t) => {
  const lru = cluster.nodes[1];
  await probeRedis(lru.port, (redis) => redis.config('SET', 'maxmemory-policy', 'allkeys-lru'));
  t.teardown(() => probeRedis(lru.port, (redis) => redis.config('SET', 'maxmemory-policy', 'noeviction')));
  const other = await startTestErrand(t, { ...env, ROLE: 'api' });
  const warning = await waitFor(
    () => other.logs.lines().find((line) => line.msg === 'Redis maxmemory-policy is not noeviction: queued jobs may be evicted'),
    10000,
    'the eviction warning',
  );
  t.match(warning, { server: `127.0.0.1:${lru.port}`, maxmemoryPolicy: 'allkeys-lru' }, 'names the primary');
  t.equal(
    other.logs.lines().filter((line) => line.msg === 'Redis maxmemory-policy is not noeviction: queued jobs may be evicted').length,
    1,
    'only that one',
  );
  t.notOk(
    errand.logs.lines().some((line) => /maxmemory-policy/.test(String(line.msg))),
    'no warning while every primary is noeviction',
  );
  await within(other.close(), 30000, 'the api errand to close');
});

t.test('nothing was written outside the tagged slot', async (t) => {
  const keys = await Promise.all(cluster.nodes.map((node) => probeRedis(node.port, (redis) => redis.keys('*'))));
  const all = keys.flat();
  t.ok(all.length > 0, 'queue keys exist');
  t.same(
    all.filter((key) => !key.startsWith(`${errand.config.QUEUE_PREFIX}:`)),
    [],
    'every key carries the tagged prefix',
  );
  const slots = new Set(await probeRedis(cluster.nodes[0].port, (redis) => Promise.all(all.map((key) => redis.cluster('KEYSLOT', key)))));
  t.equal(slots.size, 1, 'one slot');
});

t.test('after a whole-cluster outage the relay publishes what was accepted meanwhile', async (t) => {
  // Every node dies at once (no persistence: the cluster comes back empty, as after losing its memory).
  await Promise.all(cluster.nodes.map((node) => node.kill()));
  // The answer that names redis (PostgreSQL's 1 s probe may miss once on a loaded machine: polled, not asserted away).
  const ready = await waitFor(
    async () => {
      const answer = await app.inject({ method: 'GET', url: '/readyz' });
      const { checks } = answer.json<{ checks: { postgres: string; redis: string } }>();
      return checks.redis === 'unreachable' && checks.postgres === 'ok' ? answer : undefined;
    },
    15000,
    'readyz reports redis unreachable, postgres ok',
  );
  t.equal(ready.statusCode, 503);
  t.same(ready.json().checks, { postgres: 'ok', redis: 'unreachable' }, 'the check is named, no error text');

  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'cluster-outage@example.com' } });
  t.equal(res.statusCode, 202, 'accepted while the cluster is down: the outbox holds the job');
  const unpublished = await deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
  t.equal(unpublished.length, 1, 'one row waits in the outbox');

  // Same ports, same nodes.conf: the cluster re-forms with its slots.
  await Promise.all(cluster.nodes.map((node) => node.start()));
  await cluster.waitUntilHealthy();
  await waitFor(() => emailsTo('cluster-outage@example.com').length === 1 || undefined, 45000, 'email after the outage');
  const left = await deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
  t.equal(left.length, 0, 'the relay published it');
  await waitFor(
    async () => ((await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? true : undefined),
    15000,
    'ready again',
  );
});
