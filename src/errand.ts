import type { DestinationStream } from 'pino';
import { QueueEvents, type Worker } from 'bullmq';
import type { Config } from './config.js';
import { createDeps, type Deps } from './deps.js';
import { buildApp, type App } from './app.js';
import { createDb, ensureDatabase, migrateToLatest } from './core/db.js';
import { logQueueEvents, logWorkerEvents } from './core/job-logging.js';
import { QUEUE_NAMES, type QueueName } from './core/queues.js';
import { waitUntilConnected, warnUnlessNoEviction } from './core/redis.js';
import { createEmailWorker } from './email/worker.js';
import { EMAIL_VERIFICATION_JOB, ORDER_TRACKING_LINK_JOB } from './email/jobs.js';
import { startOutboxRelay, type OutboxRelay } from './outbox/outbox.js';
import { instrumentWorker } from './ops/metrics.js';
import { composeVerificationEmail } from './signup/verification-email.js';
import { composeOrderTrackingEmail } from './payments/tracking-email.js';
import { createPaymentsSweepWorker } from './reconcile/worker.js';
import { startSchedulerSync, type SchedulerSync } from './reconcile/scheduler.js';

export interface Errand {
  deps: Deps;
  app: App;
  workers: Worker[];
  /** Stops in reverse order of start: HTTP, workers (bounded), relay, queue events, queues, Redis, pool. */
  close(): Promise<void>;
}

/** Creates the database if missing and applies migrations, on a short-lived pool of its own. */
export async function prepareDatabase(config: Config): Promise<string[]> {
  await ensureDatabase(config.DATABASE_URL);
  const db = createDb(config.DATABASE_URL, 1);
  try {
    return await migrateToLatest(db);
  } finally {
    await db.destroy();
  }
}

function sleep(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => setTimeout(() => resolve('timeout'), ms).unref());
}

/** `worker.close()` waits for active jobs with no deadline of its own (and can hang without Redis). */
async function closeWorkerWithin(worker: Worker, graceMs: number, deps: Deps): Promise<void> {
  // pause() takes no new jobs and waits for the active ones; a second close() call would only return the first's promise.
  const outcome = await Promise.race([worker.pause().then(() => 'drained' as const), sleep(graceMs)]);
  if (outcome === 'timeout') {
    deps.log.warn({ queue: worker.name, graceMs }, 'active jobs did not finish within the grace period; forcing the worker closed');
  }
  await Promise.race([worker.close(outcome === 'timeout'), sleep(1000)]);
}

/** Wires one errand process for its role. The caller listens and handles signals. */
export async function startErrand(config: Config, options: { logDestination?: DestinationStream } = {}): Promise<Errand> {
  await prepareDatabase(config);
  const deps = createDeps(config, options);
  const runsWorkers = config.ROLE !== 'api';
  // Serving without Redis is fine (the outbox keeps jobs), but give it a moment so a normal start is ready at once.
  if (!(await waitUntilConnected(deps.redis, 3000))) deps.log.warn('Redis not reachable yet; jobs stay in the outbox until it is');
  void warnUnlessNoEviction(deps.redis, deps.log);

  const workers: Worker[] = [];
  const queueEvents: QueueEvents[] = [];
  let relay: OutboxRelay | undefined;
  let schedulerSync: SchedulerSync | undefined;
  if (runsWorkers) {
    const emailWorker = createEmailWorker(deps, {
      [EMAIL_VERIFICATION_JOB]: composeVerificationEmail(deps),
      [ORDER_TRACKING_LINK_JOB]: composeOrderTrackingEmail(deps),
    });
    const sweepWorker = createPaymentsSweepWorker(deps);
    workers.push(emailWorker, sweepWorker);
    // Listeners go on at once: a worker runs from construction, and a job may finish before start-up does.
    for (const worker of workers) {
      logWorkerEvents(worker, deps.queues[worker.name as QueueName], deps.log);
      instrumentWorker(worker, deps.metrics);
    }

    for (const name of QUEUE_NAMES) {
      // Read from now, not from whenever the blocking read first runs: jobs added during start-up are logged too.
      const events = new QueueEvents(name, { connection: deps.workerRedis, prefix: config.QUEUE_PREFIX, lastEventId: `${Date.now()}-0` });
      logQueueEvents(events, deps.queues[name], deps.log);
      queueEvents.push(events);
    }
    relay = startOutboxRelay(deps, { intervalMs: config.OUTBOX_RELAY_INTERVAL_MS, graceMs: config.OUTBOX_RELAY_GRACE_MS });

    // Wait a little for the schedulers (so a started worker has them); with Redis away, keep retrying in the background.
    schedulerSync = startSchedulerSync(deps.queues, config, deps.log);
    await Promise.race([schedulerSync.firstAttempt, sleep(5000)]);
  }

  const app = await buildApp(deps);
  deps.log.info({ role: config.ROLE, queuePrefix: config.QUEUE_PREFIX }, 'errand started');

  let closing: Promise<void> | undefined;
  return {
    deps,
    app,
    workers,
    close() {
      closing ??= (async () => {
        schedulerSync?.stop();
        await app.close();
        await Promise.all(workers.map((worker) => closeWorkerWithin(worker, config.SHUTDOWN_GRACE_MS, deps)));
        await relay?.stop();
        await Promise.allSettled(queueEvents.map((events) => events.close()));
        await deps.close();
      })();
      return closing;
    },
  };
}
