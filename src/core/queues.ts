import { Queue } from 'bullmq';
import type { RedisClient } from './redis.js';
import type { Config } from '../config.js';
import type { Logger } from './logger.js';

export const EMAIL_QUEUE = 'email';
export const PAYMENTS_RECONCILE_QUEUE = 'payments-reconcile';
export const QUEUE_NAMES = [EMAIL_QUEUE, PAYMENTS_RECONCILE_QUEUE] as const;
export type QueueName = (typeof QUEUE_NAMES)[number];
export type Queues = Readonly<Record<QueueName, Queue>>;

export const COMPLETED_JOBS_KEPT = { age: 24 * 3600, count: 1000 } as const;
export const FAILED_JOBS_KEPT = { age: 7 * 24 * 3600 } as const;

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

export function isQueueName(name: string): name is QueueName {
  return (QUEUE_NAMES as readonly string[]).includes(name);
}
