import { Queue } from 'bullmq';
import type { RedisClient } from './core/redis.js';
import type { Config } from './config.js';
import {
  COMPLETED_JOBS_KEPT,
  FAILED_JOBS_KEPT,
  type JobDeclaration,
  type JobNameOf,
  type PayloadOf,
  type Processors,
} from './core/job-registry.js';
import type { Logger } from './core/logger.js';
import { queueTelemetry } from './core/tracing.js';
import { emailQueue } from './email/jobs.js';
import { paymentsReconcileQueue } from './reconcile/jobs.js';
import { maintenanceQueue } from './maintenance/jobs.js';
import { batchQueue } from './batch/jobs.js';

export { EMAIL_QUEUE } from './email/jobs.js';
export { PAYMENTS_RECONCILE_QUEUE } from './reconcile/jobs.js';
export { BATCH_QUEUE } from './batch/jobs.js';
export { MAINTENANCE_QUEUE } from './maintenance/jobs.js';

/** Every queue errand has. A queue listed here gets a worker in the `worker` and `all` roles (see WorkerProcessors). */
export const QUEUE_DEFINITIONS = [emailQueue, paymentsReconcileQueue, batchQueue, maintenanceQueue] as const;

type Definitions = (typeof QUEUE_DEFINITIONS)[number];
export type QueueName = Definitions['name'];
export type DefinitionOf<Q extends QueueName> = Extract<Definitions, { name: Q }>;
export type JobName<Q extends QueueName> = JobNameOf<DefinitionOf<Q>>;
export type Payload<Q extends QueueName, N extends JobName<Q>> = PayloadOf<DefinitionOf<Q>, N>;

/** A processor for every job of every queue: leaving one out is a compile error, so nothing can be queued that no role runs. */
export type WorkerProcessors = { readonly [Q in QueueName]: Processors<DefinitionOf<Q>> };

export const QUEUE_NAMES: readonly QueueName[] = QUEUE_DEFINITIONS.map((definition) => definition.name);
export type Queues = Readonly<Record<QueueName, Queue>>;

export function isQueueName(name: string): name is QueueName {
  return (QUEUE_NAMES as readonly string[]).includes(name);
}

export function queueDefinition<Q extends QueueName>(name: Q): DefinitionOf<Q> {
  return QUEUE_DEFINITIONS.find((definition) => definition.name === name) as DefinitionOf<Q>;
}

/** The options a job of this name is always added with (its priority), wherever it is added from. */
export function jobOptionsFor(queue: string, jobName: string): { priority?: number } {
  if (!isQueueName(queue)) return {};
  const jobs = queueDefinition(queue).jobs as Readonly<Record<string, JobDeclaration | undefined>>;
  const priority = jobs[jobName]?.priority;
  return priority === undefined ? {} : { priority };
}

/**
 * One Queue per name on the shared fail-fast producer connection. BullMQ
 * waits for the first 'ready' before its first command; callers on the
 * request path check `redis.status` first so they never wait on that.
 */
export function createQueues(redis: RedisClient, config: Config, log: Logger): Queues {
  const queues = {} as Record<QueueName, Queue>;
  for (const name of QUEUE_NAMES) {
    const queue = new Queue(name, {
      connection: redis,
      prefix: config.QUEUE_PREFIX,
      streams: { events: { maxLen: 1000 } },
      ...queueTelemetry(),
      defaultJobOptions: {
        attempts: config.JOB_ATTEMPTS,
        backoff: { type: 'exponential', delay: config.JOB_BACKOFF_MS },
        removeOnComplete: COMPLETED_JOBS_KEPT,
        removeOnFail: FAILED_JOBS_KEPT,
      },
    });
    queue.on('error', (err) => log.warn({ queue: name, err }, 'queue connection error'));
    queues[name] = queue;
  }
  return Object.freeze(queues);
}
