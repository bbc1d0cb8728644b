import { COMPLETED_JOBS_KEPT, FAILED_JOBS_KEPT } from './core/job-registry.js';
import type { SchedulerDefinition } from './core/scheduler-sync.js';
import { MAINTENANCE_QUEUE, MAINTENANCE_SCHEDULER_ID, RETENTION_JOB } from './maintenance/jobs.js';
import { PAYMENTS_RECONCILE_QUEUE, PAYMENTS_RECONCILE_SCHEDULER_ID, PAYMENTS_SWEEP_JOB } from './reconcile/jobs.js';
import type { JobName, Payload, QueueName } from './queues.js';

/** A scheduler of one queue, its job typed by the queue's declaration. */
export type TypedSchedulerDefinition<Q extends QueueName, N extends JobName<Q> = JobName<Q>> = SchedulerDefinition<Q, N, Payload<Q, N>>;

/** A scheduler of any queue (the table mixes queues). */
export type AnySchedulerDefinition = { [Q in QueueName]: TypedSchedulerDefinition<Q> }[QueueName];

/** Every job scheduler errand runs. `syncSchedulers` makes Redis match this table on each start of a worker process. */
export const SCHEDULERS: readonly AnySchedulerDefinition[] = [
  {
    id: PAYMENTS_RECONCILE_SCHEDULER_ID,
    queue: PAYMENTS_RECONCILE_QUEUE,
    enabled: (config) => config.PAYMENTS_RECONCILE_ENABLED,
    repeat: (config) => ({ pattern: config.PAYMENTS_RECONCILE_CRON, tz: config.PAYMENTS_RECONCILE_TZ }),
    job: (config) => ({
      name: PAYMENTS_SWEEP_JOB,
      data: { windowHours: config.PAYMENTS_RECONCILE_WINDOW_HOURS, limit: config.PAYMENTS_RECONCILE_LIMIT },
      // One attempt: the next tick is the retry, and a late retry would only overlap it.
      opts: { attempts: 1, removeOnComplete: COMPLETED_JOBS_KEPT, removeOnFail: FAILED_JOBS_KEPT },
    }),
  },
  {
    // Always on: deleting old rows is part of running errand, not an option (RETENTION_DAYS sets how old).
    id: MAINTENANCE_SCHEDULER_ID,
    queue: MAINTENANCE_QUEUE,
    enabled: () => true,
    repeat: (config) => ({ pattern: config.MAINTENANCE_CRON, tz: 'UTC' }),
    job: (config) => ({
      name: RETENTION_JOB,
      data: { retentionDays: config.RETENTION_DAYS, batchSize: config.RETENTION_BATCH_SIZE },
      // Deleting is idempotent; the next day is the retry.
      opts: { attempts: 1, removeOnComplete: COMPLETED_JOBS_KEPT, removeOnFail: FAILED_JOBS_KEPT },
    }),
  },
];
