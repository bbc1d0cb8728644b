import { QueueEventsProducer, type QueueEvents, type QueueEventsListener, type Worker } from 'bullmq';
import type { RedisClient } from '../core/redis.js';
import type { Logger } from '../core/logger.js';
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
