import t from 'tap';
import { Redis } from 'ioredis';
import { createDb, migrateToLatest } from '../../src/core/db.js';
import { createLogger } from '../../src/core/logger.js';
import { createQueues, PAYMENTS_RECONCILE_QUEUE } from '../../src/queues.js';
import { loadConfig } from '../../src/config.js';
import { freePort, REDIS_URL, runScript, testEnv } from '../support/helpers.js';
import { insertOrders, startSimulator } from '../support/reconcile.js';

const { sim, url } = await startSimulator(t);
const env = testEnv(t, { PAYMENT_PROVIDER_URL: url, LOG_LEVEL: 'info' });
const lastLine = (stdout: string) => stdout.trim().split('\n');

t.test('runs in process: one JSON summary line on stdout, logs on stderr, exit 0; --dry-run changes nothing', async (t) => {
  // The script creates and migrates the database itself; this test only inserts rows.
  const first = await runScript('sweep.ts', ['--window', '24h'], env);
  t.equal(first.code, 0, first.stderr);
  t.same(JSON.parse(first.stdout), { checked: 0, paid: 0, failed: 0, expired: 0, unchanged: 0, errors: 0, durationMs: JSON.parse(first.stdout).durationMs });

  const db = createDb(env.DATABASE_URL!, 2);
  t.teardown(() => db.destroy());
  await migrateToLatest(db);
  const [paid, failed, older] = await insertOrders(db, [{ ageMinutes: 10 }, { ageMinutes: 20 }, { ageMinutes: 120 }]);
  for (const order of [paid!, older!]) sim.setPayment(order.providerRef, { status: 'succeeded', amount: order.amount, currency: order.currency });
  sim.setPayment(failed!.providerRef, { status: 'failed', amount: failed!.amount, currency: failed!.currency });

  const dry = await runScript('sweep.ts', ['--window', '30m', '--limit', '10', '--dry-run'], env);
  t.equal(dry.code, 0, dry.stderr);
  t.equal(lastLine(dry.stdout).length, 1, 'exactly one line on stdout');
  t.match(JSON.parse(dry.stdout), { checked: 2, paid: 1, failed: 1, unchanged: 0, errors: 0 });
  const statuses = await db.selectFrom('orders').select('status').execute();
  t.ok(statuses.every((r) => r.status === 'pending'), 'dry run changed nothing');
  t.match(dry.stderr, /payments sweep finished/, 'logs went to stderr');

  const real = await runScript('sweep.ts', ['--window', '30m', '--limit', '1'], env);
  t.equal(real.code, 0, real.stderr);
  t.match(JSON.parse(real.stdout), { checked: 1, failed: 1, paid: 0 }, 'limit 1: the oldest in the window only');
  t.equal((await db.selectFrom('orders').select('status').where('id', '=', failed!.id).executeTakeFirstOrThrow()).status, 'failed');
  t.equal((await db.selectFrom('orders').select('status').where('id', '=', paid!.id).executeTakeFirstOrThrow()).status, 'pending');
});

t.test('--enqueue adds one payments-sweep job and prints its id', async (t) => {
  const res = await runScript('sweep.ts', ['--enqueue', '--window', '2h', '--limit', '5'], env);
  t.equal(res.code, 0, res.stderr);
  const line = JSON.parse(res.stdout) as { jobId: string };
  t.match(line, { enqueued: true, jobId: /^sweep-/, windowHours: 2, limit: 5 });
  t.notOk(line.jobId.includes(':'));
  const redis = new Redis(REDIS_URL);
  t.teardown(() => redis.disconnect());
  const queues = createQueues(redis, loadConfig(env), createLogger('silent'));
  t.teardown(() => Promise.all(Object.values(queues).map((q) => q.close())));
  const queue = queues[PAYMENTS_RECONCILE_QUEUE];
  const job = await queue.getJob(line.jobId);
  t.match(job, { name: 'payments-sweep', data: { windowHours: 2, limit: 5 } });
  t.equal(await queue.count(), 1, 'exactly one job');
});

t.test('exit 1 when the database is unreachable', async (t) => {
  const res = await runScript('sweep.ts', [], { ...env, DATABASE_URL: `postgres://postgres@127.0.0.1:${await freePort()}/errand` });
  t.equal(res.code, 1);
  t.equal(res.stdout, '', 'no summary');
  t.match(res.stderr, /sweep failed/);
});

t.test('exit 2 with a usage line for bad arguments', async (t) => {
  for (const args of [['--bogus'], ['--window', '5x'], ['--window', '24'], ['--limit', '0'], ['--limit', 'ten'], ['--window'], ['extra'], ['--enqueue', '--dry-run'], ['--window', '100d']]) {
    const res = await runScript('sweep.ts', args, env);
    t.equal(res.code, 2, args.join(' '));
    t.match(res.stderr, /usage: npm run sweep/);
    t.equal(res.stdout, '');
  }
  const help = await runScript('sweep.ts', ['--help'], env);
  t.equal(help.code, 0);
  t.match(help.stdout, /--dry-run/);
});
