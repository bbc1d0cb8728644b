import type { JobSchedulerTemplateOptions, Queue } from 'bullmq';
import type { Config } from '../config.js';
import type { Logger } from './logger.js';

/**
 * One scheduler: which queue, when it is on, its pattern and the job it adds. Core knows no queue: the table
 * (src/schedulers.ts) types each entry by its queue's declaration, and the queues arrive as an argument.
 */
export interface SchedulerDefinition<Q extends string = string, N extends string = string, P = unknown> {
  id: string;
  queue: Q;
  enabled(config: Config): boolean;
  repeat(config: Config): { pattern: string; tz: string };
  job(config: Config): { name: N; data: P; opts?: JobSchedulerTemplateOptions };
}

/** The queues a sync writes to, by name. */
export type SchedulerQueues = Readonly<Record<string, Queue>>;

export type SchedulerSyncResult =
  | { id: string; action: 'upserted'; pattern: string; tz: string; next: number | null; repaired: boolean }
  | { id: string; action: 'removed' | 'absent' };

const RUNNABLE_STATES = new Set(['delayed', 'waiting', 'prioritized', 'active', 'waiting-children']);

/** BullMQ 6 refuses (instead of silently skipping) an iteration whose job id is taken. */
function isIterationCollision(error: unknown): boolean {
  return /job scheduler iteration/i.test((error as Error)?.message ?? '');
}

/**
 * Whether the scheduler's next run can still happen. Removing a scheduler and
 * upserting it again soon after can leave the next run's job id taken by a job
 * that already finished (BullMQ issue 3063): nothing would ever run again.
 */
async function nextJobProblem(queue: Queue, id: string): Promise<string | undefined> {
  const scheduler = await queue.getJobScheduler(id);
  if (!scheduler) return 'scheduler missing after upsert';
  if (!scheduler.next) return 'scheduler has no next time';
  const job = await queue.getJob(`repeat:${id}:${scheduler.next}`);
  if (!job) return 'next job missing';
  const state = await job.getState();
  return RUNNABLE_STATES.has(state) ? undefined : `next job is ${state}`;
}

/** Finished jobs of this scheduler dated in the future can only be squatters on a coming run's id. */
async function removeFinishedFutureJobs(queue: Queue, id: string, log: Logger): Promise<void> {
  const prefix = `repeat:${id}:`;
  const now = Date.now();
  for (const job of await queue.getJobs(['completed', 'failed'])) {
    if (!job?.id?.startsWith(prefix) || Number(job.id.slice(prefix.length)) <= now) continue;
    await queue.remove(job.id).catch((err: unknown) => log.warn({ err, jobId: job.id }, 'could not remove a finished scheduler job'));
  }
}

async function upsertAndVerify(queue: Queue, definition: SchedulerDefinition, config: Config, log: Logger): Promise<SchedulerSyncResult> {
  const repeat = definition.repeat(config);
  const job = definition.job(config);
  let repaired = false;
  for (let attempt = 1; ; attempt += 1) {
    let problem: string | undefined;
    try {
      await queue.upsertJobScheduler(definition.id, repeat, job);
    } catch (error) {
      if (!isIterationCollision(error)) throw error;
      problem = (error as Error).message;
    }
    problem ??= await nextJobProblem(queue, definition.id);
    if (!problem) break;
    const fields = { schedulerId: definition.id, queue: definition.queue, problem, attempt };
    if (attempt >= 3) {
      log.error(fields, 'job scheduler has no runnable next job after repeated upserts');
      break;
    }
    log.warn(fields, 'job scheduler has no runnable next job; clearing finished jobs in its way and upserting again');
    repaired = true;
    await removeFinishedFutureJobs(queue, definition.id, log);
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
  queues: SchedulerQueues,
  config: Config,
  log: Logger,
  schedulers: readonly SchedulerDefinition[],
): Promise<SchedulerSyncResult[]> {
  const results: SchedulerSyncResult[] = [];
  for (const definition of schedulers) {
    const queue = queues[definition.queue];
    if (!queue) throw new Error(`job scheduler ${definition.id} names queue ${definition.queue}, which is not among the queues given`);
    if (definition.enabled(config)) {
      const result = await upsertAndVerify(queue, definition, config, log);
      log.info({ ...result, queue: definition.queue, schedulerId: definition.id }, 'job scheduler upserted');
      results.push(result);
    } else {
      const removed = await queue.removeJobScheduler(definition.id);
      const result: SchedulerSyncResult = { id: definition.id, action: removed ? 'removed' : 'absent' };
      log.info(
        { ...result, queue: definition.queue, schedulerId: definition.id },
        removed ? 'job scheduler removed' : 'job scheduler disabled (none to remove)',
      );
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
export function startSchedulerSync(
  queues: SchedulerQueues,
  config: Config,
  log: Logger,
  schedulers: readonly SchedulerDefinition[],
  options: { retryMs?: number } = {},
): SchedulerSync {
  const retryMs = options.retryMs ?? 5000;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<boolean> => {
    try {
      await syncSchedulers(queues, config, log, schedulers);
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
