import type { JobSchedulerTemplateOptions, Queue } from 'bullmq';
import type { Config } from '../config.js';
import type { Logger } from '../core/logger.js';
import { FAILED_JOBS_KEPT, COMPLETED_JOBS_KEPT, PAYMENTS_RECONCILE_QUEUE, type QueueName, type Queues } from '../core/queues.js';
import { PAYMENTS_RECONCILE_SCHEDULER_ID, PAYMENTS_SWEEP_JOB, type PaymentsSweepPayload } from './jobs.js';

export interface SchedulerDefinition {
  id: string;
  queue: QueueName;
  enabled(config: Config): boolean;
  repeat(config: Config): { pattern: string; tz: string };
  job(config: Config): { name: string; data: Record<string, unknown>; opts?: JobSchedulerTemplateOptions };
}

/** Every job scheduler errand runs. `syncSchedulers` makes Redis match this table on each start of a worker process. */
export const SCHEDULERS: readonly SchedulerDefinition[] = [
  {
    id: PAYMENTS_RECONCILE_SCHEDULER_ID,
    queue: PAYMENTS_RECONCILE_QUEUE,
    enabled: (config) => config.PAYMENTS_RECONCILE_ENABLED,
    repeat: (config) => ({ pattern: config.PAYMENTS_RECONCILE_CRON, tz: config.PAYMENTS_RECONCILE_TZ }),
    job: (config) => ({
      name: PAYMENTS_SWEEP_JOB,
      data: { windowHours: config.PAYMENTS_RECONCILE_WINDOW_HOURS, limit: config.PAYMENTS_RECONCILE_LIMIT } satisfies PaymentsSweepPayload,
      // One attempt: the next tick is the retry, and a late retry would only overlap it.
      opts: { attempts: 1, removeOnComplete: COMPLETED_JOBS_KEPT, removeOnFail: FAILED_JOBS_KEPT },
    }),
  },
];

export type SchedulerSyncResult =
  | { id: string; action: 'upserted'; pattern: string; tz: string; next: number | null; repaired: boolean }
  | { id: string; action: 'removed' | 'absent' };

const RUNNABLE_STATES = new Set(['delayed', 'waiting', 'prioritized', 'active', 'waiting-children']);

/**
 * The job the scheduler will run next, if it can still run. Removing a
 * scheduler and upserting it again soon after can leave `next` pointing at a
 * job id that already completed (BullMQ issue 3063): nothing would ever run again.
 */
async function nextJobProblem(queue: Queue, id: string): Promise<{ problem: string; staleJobId?: string } | undefined> {
  const scheduler = await queue.getJobScheduler(id);
  if (!scheduler) return { problem: 'scheduler missing after upsert' };
  if (!scheduler.next) return { problem: 'scheduler has no next time' };
  const jobId = `repeat:${id}:${scheduler.next}`;
  const job = await queue.getJob(jobId);
  if (!job) return { problem: 'next job missing' };
  const state = await job.getState();
  if (RUNNABLE_STATES.has(state)) return undefined;
  return { problem: `next job is ${state}`, staleJobId: jobId };
}

async function upsertAndVerify(queue: Queue, definition: SchedulerDefinition, config: Config, log: Logger): Promise<SchedulerSyncResult> {
  const repeat = definition.repeat(config);
  const job = definition.job(config);
  let repaired = false;
  for (let attempt = 1; ; attempt += 1) {
    await queue.upsertJobScheduler(definition.id, repeat, job);
    const trouble = await nextJobProblem(queue, definition.id);
    if (!trouble) break;
    if (attempt >= 3) {
      log.error({ schedulerId: definition.id, queue: definition.queue, problem: trouble.problem }, 'job scheduler has no runnable next job after repeated upserts');
      break;
    }
    log.warn({ schedulerId: definition.id, queue: definition.queue, problem: trouble.problem }, 'job scheduler has no runnable next job; upserting again');
    repaired = true;
    if (trouble.staleJobId) {
      // A finished job squatting on the next id: remove it so the upsert can create the real one.
      await queue.remove(trouble.staleJobId).catch((err: unknown) => log.warn({ err, jobId: trouble.staleJobId }, 'could not remove stale scheduler job'));
    }
  }
  const scheduler = await queue.getJobScheduler(definition.id);
  return { id: definition.id, action: 'upserted', ...repeat, next: scheduler?.next ?? null, repaired };
}

/**
 * Upserts every enabled scheduler (a changed pattern or payload updates it in
 * place) and removes every disabled one. Safe on every start of every replica:
 * the scheduler id is fixed, so any number of processes leave one scheduler.
 */
export async function syncSchedulers(
  queues: Queues,
  config: Config,
  log: Logger,
  schedulers: readonly SchedulerDefinition[] = SCHEDULERS,
): Promise<SchedulerSyncResult[]> {
  const results: SchedulerSyncResult[] = [];
  for (const definition of schedulers) {
    const queue = queues[definition.queue];
    if (definition.enabled(config)) {
      const result = await upsertAndVerify(queue, definition, config, log);
      log.info({ ...result, queue: definition.queue, schedulerId: definition.id }, 'job scheduler upserted');
      results.push(result);
    } else {
      const removed = await queue.removeJobScheduler(definition.id);
      const result: SchedulerSyncResult = { id: definition.id, action: removed ? 'removed' : 'absent' };
      log.info({ ...result, queue: definition.queue, schedulerId: definition.id }, removed ? 'job scheduler removed' : 'job scheduler disabled (none to remove)');
      results.push(result);
    }
  }
  return results;
}

export interface SchedulerSync {
  /** Settles after the first attempt (true when it succeeded). */
  firstAttempt: Promise<boolean>;
  stop(): void;
}

/** `syncSchedulers` now, and again every `retryMs` until it succeeds once (Redis may be away at start). */
export function startSchedulerSync(queues: Queues, config: Config, log: Logger, options: { retryMs?: number } = {}): SchedulerSync {
  const retryMs = options.retryMs ?? 5000;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<boolean> => {
    try {
      await syncSchedulers(queues, config, log);
      return true;
    } catch (err) {
      if (stopped) return false;
      log.error({ err, retryMs }, 'could not sync job schedulers; will retry');
      timer = setTimeout(() => void attempt(), retryMs);
      timer.unref();
      return false;
    }
  };
  return {
    firstAttempt: attempt(),
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
