import { QueueEventsProducer, UnrecoverableError, type QueueEvents, type QueueEventsListener, type Worker } from 'bullmq';
import type { RedisClient } from '../core/redis.js';
import type { Logger } from '../core/logger.js';
import type { Db } from '../db/schema.js';
import type { JobProcessor, Processors, QueueDefinition } from '../core/job-registry.js';
import { cancelledJobsChecker } from '../db/cancelled-jobs.js';
import { CANCELLED_REASON } from './jobs.js';

/** A custom event on the queue's own events stream: every worker process already reads that stream. */
export const CANCEL_REQUESTED_EVENT = 'cancel-requested';

interface CancelListener extends QueueEventsListener {
  [CANCEL_REQUESTED_EVENT]: (args: { jobId: string }, id: string) => void;
}

/**
 * Tells whichever process runs `jobId` to abort it. Published on the queue's
 * events stream (a Redis stream, so it works wherever BullMQ does: one
 * server, a cluster, Sentinel); the durable cancel flag in PostgreSQL covers
 * a process that misses it (it sees the flag at its next checkpoint).
 */
export async function publishCancelRequest(redis: RedisClient, prefix: string, queue: string, jobId: string): Promise<void> {
  const producer = new QueueEventsProducer(queue, { connection: redis, prefix });
  try {
    await producer.publishEvent({ eventName: CANCEL_REQUESTED_EVENT, jobId });
  } finally {
    // The connection is shared (the producer one): closing the producer leaves it open.
    await producer.close();
  }
}

/** In each worker process: a cancel request for a job this worker runs aborts the processor's AbortSignal. */
export function abortCancelledJobs(events: QueueEvents, worker: Worker, log: Logger): void {
  events.on<CancelListener>(CANCEL_REQUESTED_EVENT, ({ jobId }: { jobId: string }) => {
    if (worker.cancelJob(jobId, CANCELLED_REASON)) {
      log.info({ queue: worker.name, jobId, event: 'cancel-requested' }, 'job cancel requested; aborting it at its next chunk');
    }
  });
}

/**
 * A queue's processors, each first asking PostgreSQL whether its job was cancelled (`cancelled_jobs`): a
 * cancelled job that still reaches a worker (re-added by a publish that raced the cancel, or brought back by a
 * failover that lost the removal) fails with reason `cancelled` (no retry) without running.
 */
export function skipCancelledJobs<Q extends QueueDefinition>(db: Db, definition: Q, processors: Processors<Q>): Processors<Q> {
  const isCancelled = cancelledJobsChecker(db, definition.name);
  const guarded: Record<string, JobProcessor<unknown>> = {};
  for (const [name, process] of Object.entries(processors as Record<string, JobProcessor<unknown>>)) {
    guarded[name] = async (data, job, signal) => {
      // PostgreSQL away: the processor meets the same outage and handles it its queue's way (the email queue pauses
      // without spending an attempt); failing here would spend attempts instead. Every processor needs PostgreSQL first.
      const cancelled = job.id !== undefined && (await isCancelled(job.id).catch(() => false));
      if (cancelled) throw new UnrecoverableError(CANCELLED_REASON);
      return process(data, job, signal);
    };
  }
  return guarded as Processors<Q>;
}
