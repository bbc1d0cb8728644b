import t from 'tap';
import { QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/core/logger.js';
import { createQueues, PAYMENTS_RECONCILE_QUEUE } from '../../src/queues.js';
import { PAYMENTS_RECONCILE_SCHEDULER_ID } from '../../src/reconcile/jobs.js';
import { syncSchedulers } from '../../src/core/scheduler-sync.js';
import { SCHEDULERS } from '../../src/schedulers.js';
import { REDIS_URL, spawnErrand, testEnv, waitFor, type SpawnOptions } from '../support/helpers.js';

const runnable = new Set(['delayed', 'waiting', 'prioritized', 'active']);
// Several tsx-started workers at once on a shared machine.
const slowStart: SpawnOptions = { readyTimeoutMs: 60000 };

t.test('syncSchedulers: upsert, update in place, remove, and a next job after remove → upsert', async (t) => {
  const env = testEnv(t, { PAYMENTS_RECONCILE_CRON: '0 * * * *', PAYMENTS_RECONCILE_TZ: 'Europe/Paris', PAYMENTS_RECONCILE_WINDOW_HOURS: '6', PAYMENTS_RECONCILE_LIMIT: '50' });
  const redis = new Redis(REDIS_URL);
  t.teardown(() => redis.disconnect());
  const log = createLogger('silent');
  const queues = createQueues(redis, loadConfig(env), log);
  t.teardown(() => Promise.all(Object.values(queues).map((q) => q.close())));
  const queue = queues[PAYMENTS_RECONCILE_QUEUE];
  const config = (overrides: Record<string, string>) => loadConfig({ ...env, ...overrides });

  const nextJobState = async () => {
    const scheduler = await queue.getJobScheduler(PAYMENTS_RECONCILE_SCHEDULER_ID);
    const job = scheduler?.next ? await queue.getJob(`repeat:${PAYMENTS_RECONCILE_SCHEDULER_ID}:${scheduler.next}`) : undefined;
    return job ? job.getState() : 'missing';
  };

  t.match(await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'false' }), log, SCHEDULERS), [{ id: 'payments-reconcile', action: 'absent' }]);
  t.match(await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'true' }), log, SCHEDULERS), [{ action: 'upserted', pattern: '0 * * * *', repaired: false }]);
  let schedulers = await queue.getJobSchedulers();
  t.equal(schedulers.length, 1);
  t.match(schedulers[0], { key: 'payments-reconcile', pattern: '0 * * * *', tz: 'Europe/Paris', template: { data: { windowHours: 6, limit: 50 } } });
  t.equal(schedulers[0]!.name, 'payments-sweep');
  t.equal(await nextJobState(), 'delayed');

  await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'true' }), log, SCHEDULERS);
  t.equal((await queue.getJobSchedulers()).length, 1, 'a second upsert leaves one');
  t.equal(await queue.getDelayedCount(), 1, 'and one next job');

  await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'true', PAYMENTS_RECONCILE_CRON: '*/5 * * * *', PAYMENTS_RECONCILE_LIMIT: '75' }), log, SCHEDULERS);
  schedulers = await queue.getJobSchedulers();
  t.equal(schedulers.length, 1, 'a changed pattern updates the one scheduler');
  t.match(schedulers[0], { pattern: '*/5 * * * *', template: { data: { limit: 75 } } });
  t.equal(await queue.getDelayedCount(), 1);

  for (let round = 0; round < 3; round++) {
    t.match(await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'false' }), log, SCHEDULERS), [{ action: 'removed' }]);
    t.equal((await queue.getJobSchedulers()).length, 0, 'removed');
    t.equal(await queue.getDelayedCount(), 0, 'with its next job');
    await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'true' }), log, SCHEDULERS);
    t.ok(runnable.has(await nextJobState()), `round ${round}: after remove → upsert a next job exists`);
  }

  // BullMQ issue 3063: a finished job squatting on the id of the scheduler's next run means nothing would run again.
  // Reproduced as it happens: the scheduler is removed, a job with the next run's id completes, the scheduler is upserted.
  const scheduler = (await queue.getJobScheduler(PAYMENTS_RECONCILE_SCHEDULER_ID))!;
  const squatterId = `repeat:${PAYMENTS_RECONCILE_SCHEDULER_ID}:${scheduler.next}`;
  await queue.removeJobScheduler(PAYMENTS_RECONCILE_SCHEDULER_ID);
  await queue.add('payments-sweep', { windowHours: 6, limit: 50 }, { jobId: squatterId });
  const worker = new Worker(PAYMENTS_RECONCILE_QUEUE, async () => 'done', { connection: { url: REDIS_URL, maxRetriesPerRequest: null }, prefix: env.QUEUE_PREFIX });
  await waitFor(async () => ((await queue.getJob(squatterId))?.finishedOn ? true : undefined), 15000, 'squatter completed');
  await worker.close();
  // A plain upsert now fails (BullMQ 6 reports the collision; 5.x left the completed job as the "next" one).
  await t.rejects(
    queue.upsertJobScheduler(PAYMENTS_RECONCILE_SCHEDULER_ID, { pattern: '0 * * * *', tz: 'Europe/Paris' }, { name: 'payments-sweep', data: { windowHours: 6, limit: 50 } }),
    /job ID already exists/,
    'the stale state is reproduced',
  );
  const [result] = await syncSchedulers(queues, config({ PAYMENTS_RECONCILE_ENABLED: 'true' }), log, SCHEDULERS);
  t.match(result, { action: 'upserted', repaired: true }, 'the guard noticed and repaired it');
  t.ok(runnable.has(await nextJobState()), 'a runnable next job exists again');
});

t.test('worker processes: one scheduler for many replicas, removed by false, updated by a new pattern, one sweep per tick', async (t) => {
  const base = testEnv(t, { ROLE: 'worker', LOG_LEVEL: 'info', PAYMENTS_RECONCILE_ENABLED: 'true', PAYMENTS_RECONCILE_CRON: '0 * * * *', WORKER_STALLED_INTERVAL_MS: '5000' });
  const redis = new Redis(REDIS_URL);
  t.teardown(() => redis.disconnect());
  const queues = createQueues(redis, loadConfig(base), createLogger('silent'));
  t.teardown(() => Promise.all(Object.values(queues).map((q) => q.close())));
  const queue = queues[PAYMENTS_RECONCILE_QUEUE];

  // Two replicas at once.
  const [a, b] = await Promise.all([spawnErrand(t, base, slowStart), spawnErrand(t, base, slowStart)]);
  let schedulers = await queue.getJobSchedulers();
  t.equal(schedulers.length, 1, 'one scheduler from two processes');
  t.match(schedulers[0], { key: 'payments-reconcile', name: 'payments-sweep', pattern: '0 * * * *' });
  t.equal(await queue.getDelayedCount(), 1, 'one next job');
  t.ok(a.logLines().some((l) => l.msg === 'job scheduler upserted'), 'the start logged the upsert');

  // Restart one with the flag off: the scheduler is gone for everyone.
  t.equal((await b.stop()).code, 0, 'SIGTERM stops it cleanly');
  const off = await spawnErrand(t, { ...base, PAYMENTS_RECONCILE_ENABLED: 'false' }, slowStart);
  t.equal((await queue.getJobSchedulers()).length, 0, 'false removed it');
  t.equal(await queue.getDelayedCount(), 0);
  t.ok(off.logLines().some((l) => l.msg === 'job scheduler removed'));
  await off.stop();

  // Back on with an every-second pattern: updated, still one; each tick runs one sweep in total, not one per process.
  const events = new QueueEvents(PAYMENTS_RECONCILE_QUEUE, { connection: { url: REDIS_URL, maxRetriesPerRequest: null }, prefix: base.QUEUE_PREFIX });
  t.teardown(() => events.close());
  await events.waitUntilReady();
  const completed: string[] = [];
  events.on('completed', ({ jobId }) => completed.push(jobId));
  const fast = await spawnErrand(t, { ...base, PAYMENTS_RECONCILE_CRON: '* * * * * *' }, slowStart);
  schedulers = await queue.getJobSchedulers();
  t.equal(schedulers.length, 1, 'still one scheduler');
  t.equal(schedulers[0]!.pattern, '* * * * * *', 'with the new pattern');

  // Three more ticks, counted by their completed events (no fixed wait).
  await waitFor(() => completed.length >= 4 || undefined, 30000, 'four sweeps');
  t.equal(new Set(completed).size, completed.length, 'no job ran twice');
  t.ok(completed.every((id) => id.startsWith('repeat:payments-reconcile:')), 'every sweep came from the scheduler');
  // The job id carries its tick's time: two processes each adding a job per tick would give two ids per tick,
  // or ticks closer than the pattern's one second.
  const tickTimes = completed.map((id) => Number(id.split(':').at(-1))).sort((x, y) => x - y);
  t.equal(new Set(tickTimes).size, tickTimes.length, 'one job per tick');
  t.ok(tickTimes.slice(1).every((time, i) => time - tickTimes[i]! >= 1000), `ticks at least a second apart: ${tickTimes.join(', ')}`);

  const finishedLines = [...a.logLines(), ...fast.logLines()].filter((l) => l.msg === 'payments sweep finished');
  const perJob = new Map<unknown, number>();
  for (const line of finishedLines) perJob.set(line.jobId, (perJob.get(line.jobId) ?? 0) + 1);
  t.ok([...perJob.values()].every((n) => n === 1), 'each sweep ran in exactly one process');
  t.ok(finishedLines.length >= completed.length - 1, 'the processes logged the sweeps');
  await Promise.all([a.stop(), fast.stop()]);
});
