import t from 'tap';
import { Redis } from 'ioredis';
import { createDb } from '../../src/db/pool.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { createLogger } from '../../src/core/logger.js';
import { createQueues, PAYMENTS_RECONCILE_QUEUE } from '../../src/queues.js';
import { loadConfig } from '../../src/config.js';
import { freePort, freshDatabaseUrl, REDIS_URL, runScript, testEnv } from '../support/helpers.js';
import { help, parseSweepArgs, usage, UsageError } from '../../scripts/sweep-args.js';
import { insertOrders, startSimulator } from '../support/reconcile.js';

const { sim, url } = await startSimulator(t);
// No database yet: the first run proves the script creates and migrates it.
const env = testEnv(t, { PAYMENT_PROVIDER_URL: url, LOG_LEVEL: 'info', DATABASE_URL: freshDatabaseUrl(t, { create: false }) });
function catchError(fn: () => unknown): Error | undefined {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  return undefined;
}
const lastLine = (stdout: string) => stdout.trim().split('\n');

t.test('runs in process: one JSON summary line on stdout, logs on stderr, exit 0; --dry-run changes nothing', async (t) => {
  // The script creates and migrates the database itself; this test only inserts rows.
  const first = await runScript('sweep.ts', ['--window', '24h'], env);
  t.equal(first.code, 0, first.stderr);
  const summary = JSON.parse(first.stdout) as Record<string, unknown>;
  t.same(Object.keys(summary).sort(), ['checked', 'durationMs', 'errors', 'expired', 'failed', 'paid', 'unchanged']);
  t.match(summary, { checked: 0, paid: 0, failed: 0, expired: 0, unchanged: 0, errors: 0, durationMs: Number });

  const db = createDb(env.DATABASE_URL!, 2);
  t.teardown(() => db.destroy());
  await migrateToLatest(db);
  const [paid, failed, older] = await insertOrders(db, [{ ageMinutes: 10 }, { ageMinutes: 20 }, { ageMinutes: 120 }]);
  for (const order of [paid, older])
    sim.setPayment(order.providerRef, { status: 'succeeded', amount: order.amount, currency: order.currency });
  sim.setPayment(failed.providerRef, { status: 'failed', amount: failed.amount, currency: failed.currency });

  const dry = await runScript('sweep.ts', ['--window', '30m', '--limit', '10', '--dry-run'], env);
  t.equal(dry.code, 0, dry.stderr);
  t.equal(lastLine(dry.stdout).length, 1, 'exactly one line on stdout');
  t.match(JSON.parse(dry.stdout), { checked: 2, paid: 1, failed: 1, unchanged: 0, errors: 0 });
  const statuses = await db.selectFrom('orders').select('status').execute();
  t.ok(
    statuses.every((r) => r.status === 'pending'),
    'dry run changed nothing',
  );
  t.match(dry.stderr, /payments sweep finished/, 'logs went to stderr');

  const real = await runScript('sweep.ts', ['--window', '30m', '--limit', '1'], env);
  t.equal(real.code, 0, real.stderr);
  t.match(JSON.parse(real.stdout), { checked: 1, failed: 1, paid: 0 }, 'limit 1: the oldest in the window only');
  t.equal((await db.selectFrom('orders').select('status').where('id', '=', failed.id).executeTakeFirstOrThrow()).status, 'failed');
  t.equal((await db.selectFrom('orders').select('status').where('id', '=', paid.id).executeTakeFirstOrThrow()).status, 'pending');
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

t.test('the argument parser: durations, limits, defaults, and a clear message for each bad command line', async (t) => {
  t.same(parseSweepArgs([]), { dryRun: false, enqueue: false, help: false }, 'no arguments: the configured defaults apply');
  t.same(parseSweepArgs(['--window', '30m', '--limit', '10', '--dry-run']), {
    windowHours: 0.5,
    limit: 10,
    dryRun: true,
    enqueue: false,
    help: false,
  });
  t.same(parseSweepArgs(['--enqueue', '--window', '2d']), { windowHours: 48, dryRun: false, enqueue: true, help: false });
  t.equal(parseSweepArgs(['-h']).help, true);
  t.equal(parseSweepArgs(['--window', '90d']).windowHours, 90 * 24, 'the longest window is accepted');
  const bad: [string[], RegExp][] = [
    [['--bogus'], /bogus/],
    [['--window', '5x'], /--window must be a duration/],
    [['--window', '24'], /--window must be a duration/],
    [['--window', '100d'], /--window may be at most 90d/],
    [['--limit', '0'], /--limit must be an integer/],
    [['--limit', 'ten'], /--limit must be an integer/],
    [['--limit', '1.5'], /--limit must be an integer/],
    [['--window'], /--window/],
    [['extra'], /extra/],
    [['--enqueue', '--dry-run'], /cannot be combined/],
  ];
  for (const [args, message] of bad) {
    const error = catchError(() => parseSweepArgs(args));
    t.type(error, UsageError, `${args.join(' ')}: a usage error (exit 2)`);
    t.match(error?.message, message, args.join(' '));
  }
  t.match(help, /--dry-run/);
  t.match(help, usage);
});

t.test('wiring: a bad command line exits 2 with the message and the usage line, nothing on stdout', async (t) => {
  const res = await runScript('sweep.ts', ['--limit', '0'], env);
  t.equal(res.code, 2);
  t.match(res.stderr, /--limit must be an integer/);
  t.match(res.stderr, /usage: npm run sweep/);
  t.equal(res.stdout, '');
});
