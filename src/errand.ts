import type { DestinationStream } from 'pino';
import { setTimeout as delay } from 'node:timers/promises';
import { QueueEvents, type Worker } from 'bullmq';
import { developmentDefaultsInUse, type Config } from './config.js';
import { createDeps, type Deps } from './deps.js';
import { buildApp, type App, type AppOptions } from './app.js';
import { prepareDatabase } from './db/migrations.js';
import { createQueueWorker, type Processors } from './core/job-registry.js';
import { logQueueEvents, logWorkerEvents } from './core/job-logging.js';
import { closeQueueEvents, describeRedisTopology, waitUntilConnected, warnUnlessNoEviction } from './core/redis.js';
import { startSchedulerSync, type SchedulerSync } from './core/scheduler-sync.js';
import { emailProcessors } from './email/worker.js';
import { createEmailComposers } from './email/composers.js';
import { startOutboxRelay, type OutboxRelay } from './outbox/relay.js';
import { instrumentWorker } from './ops/metrics.js';
import { paymentsReconcileProcessors } from './reconcile/worker.js';
import { maintenanceProcessors } from './maintenance/worker.js';
import { batchProcessors } from './batch/worker.js';
import { abortCancelledJobs, skipCancelledJobs } from './batch/cancel.js';
import { QUEUE_DEFINITIONS, type WorkerProcessors } from './queues.js';
import { SCHEDULERS } from './schedulers.js';

export interface Errand {
  deps: Deps;
  app: App;
  workers: Worker[];
  /** Stops in reverse order of start: HTTP, workers (bounded), relay, queue events, queues, Redis, pool. */
  close(): Promise<void>;
}

/**
 * `worker.close()` waits for active jobs with no deadline of its own. Without Redis, pause() and close() also wait
 * for ever on their blocking connection's disconnect (see closeQueueEvents): then the grace period runs out.
 */
async function closeWorkerWithin(worker: Worker, graceMs: number, deps: Deps): Promise<void> {
  // pause() takes no new jobs and waits for the active ones; a second close() call would only return the first's promise.
  const outcome = await Promise.race([worker.pause().then(() => 'drained' as const), delay(graceMs, 'timeout' as const, { ref: false })]);
  if (outcome === 'timeout') {
    // Without Redis this also happens with no job active (see above): the connection's status says which it was.
    deps.log.warn(
      { queue: worker.name, graceMs, redisStatus: deps.workerRedis.status },
      'the worker did not stop within the grace period (active jobs, or Redis unreachable); forcing the worker closed',
    );
  }
  await Promise.race([worker.close(outcome === 'timeout'), delay(1000, undefined, { ref: false })]);
}

export interface StartOptions {
  logDestination?: DestinationStream;
  /** Database preparation the caller already started (main.ts overlaps it with loading this module). */
  databasePrepared?: Promise<unknown>;
  /** Passed to buildApp. */
  app?: AppOptions;
}

/** Wires one errand process for its role. The caller listens and handles signals. */
export async function startErrand(config: Config, options: StartOptions = {}): Promise<Errand> {
  await (options.databasePrepared ?? prepareDatabase(config.DATABASE_URL));
  const deps = createDeps(config, options);
  const runsWorkers = config.ROLE !== 'api';
  const devDefaults = developmentDefaultsInUse(config);
  // Production refuses these (loadConfig); anywhere else, say it once.
  if (devDefaults.length > 0)
    deps.log.warn(
      { variables: devDefaults },
      `running on development defaults (${devDefaults.join(', ')}); set them before exposing errand`,
    );
  // Serving without Redis is fine (the outbox keeps jobs), but give it a moment so a normal start is ready at once.
  if (!(await waitUntilConnected(deps.redis, 3000))) deps.log.warn('Redis not reachable yet; jobs stay in the outbox until it is');
  void warnUnlessNoEviction(deps.redis, deps.log);

  const workers: Worker[] = [];
  const queueEvents: QueueEvents[] = [];
  let relay: OutboxRelay | undefined;
  let schedulerSync: SchedulerSync | undefined;
  if (runsWorkers) {
    // Keyed by queue name: a queue without its processors (or a job without its handler) does not compile.
    const processors: WorkerProcessors = {
      email: emailProcessors(deps, createEmailComposers(deps)),
      'payments-reconcile': paymentsReconcileProcessors(deps),
      maintenance: maintenanceProcessors(deps),
      batch: batchProcessors(deps),
    };
    for (const definition of QUEUE_DEFINITIONS) {
      // TypeScript cannot pair `definition` with `processors[definition.name]` across the union; WorkerProcessors already did.
      const guarded = skipCancelledJobs(deps.db, definition, processors[definition.name] as Processors<typeof definition>);
      const worker = createQueueWorker(definition, guarded, config, deps.workerRedis);
      // Listeners go on at once: a worker runs from construction, and a job may finish before start-up does.
      logWorkerEvents(worker, deps.queues[definition.name], deps.log);
      instrumentWorker(worker, deps.metrics);
      workers.push(worker);

      // Read from now, not from whenever the blocking read first runs: jobs added during start-up are logged too.
      const events = new QueueEvents(definition.name, {
        connection: deps.workerRedis,
        prefix: config.QUEUE_PREFIX,
        lastEventId: `${Date.now()}-0`,
      });
      logQueueEvents(events, deps.queues[definition.name], deps.log);
      // POST /admin/jobs/:queue/:id/cancel, from any process, reaches the one running the job through this stream.
      abortCancelledJobs(events, worker, deps.log);
      queueEvents.push(events);
    }
    relay = startOutboxRelay(deps, {
      intervalMs: config.OUTBOX_RELAY_INTERVAL_MS,
      graceMs: config.OUTBOX_RELAY_GRACE_MS,
      batchSize: config.OUTBOX_RELAY_BATCH_SIZE,
      maxFailures: config.OUTBOX_MAX_FAILURES,
    });

    schedulerSync = startSchedulerSync(deps.queues, config, deps.log, SCHEDULERS);
  }

  const app = await buildApp(deps, options.app);
  // Wait a little for the schedulers (so a started worker has them); with Redis away, keep retrying in the background.
  if (schedulerSync) await Promise.race([schedulerSync.firstAttempt, delay(5000, undefined, { ref: false })]);
  deps.log.info({ role: config.ROLE, queuePrefix: config.QUEUE_PREFIX, redis: describeRedisTopology(config.redis) }, 'errand started');

  let closing: Promise<void> | undefined;
  return {
    deps,
    app,
    workers,
    close() {
      // Each step logged (debug) before it starts: a shutdown that hangs says which step it hangs in.
      const step = (name: string) => deps.log.debug({ step: name }, 'closing');
      closing ??= (async () => {
        schedulerSync?.stop();
        step('http');
        await app.close();
        step('workers');
        await Promise.all(workers.map((worker) => closeWorkerWithin(worker, config.SHUTDOWN_GRACE_MS, deps)));
        step('outbox relay');
        await relay?.stop();
        step('queue events');
        await Promise.all(queueEvents.map(closeQueueEvents));
        step('queues, connections and pools');
        await deps.close();
        step('done');
      })();
      return closing;
    },
  };
}
