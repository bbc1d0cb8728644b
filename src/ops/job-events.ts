import { QueueEvents } from 'bullmq';
import type { Logger } from '../core/logger.js';
import { closeQueueEvents, type RedisClient } from '../core/redis.js';

/** The events a job's stream follows, for one job id. */
export type JobEvent = { kind: 'progress'; data: unknown } | { kind: 'completed' | 'failed' | 'removed' };

export interface JobEventHub {
  /**
   * Calls `listener` with every event of job `jobId` in `queue` from now on, until the returned function is called.
   * Every subscriber of a queue shares one QueueEvents (one blocking Redis connection), opened by the first and
   * closed when the last leaves.
   */
  subscribe(queue: string, jobId: string, listener: (event: JobEvent) => void): Promise<() => Promise<void>>;
  /** Queues with an open QueueEvents (for tests and metrics). */
  readonly openQueues: number;
  close(): Promise<void>;
}

interface Subscription {
  events: QueueEvents;
  listeners: Map<string, Set<(event: JobEvent) => void>>;
  count: number;
}

export function createJobEventHub(options: { connection: RedisClient; redis: RedisClient; prefix: string; log: Logger }): JobEventHub {
  const subscriptions = new Map<string, Promise<Subscription>>();

  const open = async (queue: string): Promise<Subscription> => {
    // Read the events stream from Redis's "now": a subscriber reads the job's state after subscribing, so nothing
    // between the two is missed (a later subscriber joins a reader that is already past its own "now").
    const [seconds, micros] = await options.redis.time();
    const events = new QueueEvents(queue, {
      connection: options.connection,
      prefix: options.prefix,
      lastEventId: `${Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)}-0`,
    });
    const subscription: Subscription = { events, listeners: new Map(), count: 0 };
    events.on('error', (err) => options.log.warn({ err, queue }, 'job event stream error'));
    const dispatch = (jobId: string, event: JobEvent) => {
      for (const listener of subscription.listeners.get(jobId) ?? []) listener(event);
    };
    events.on('progress', ({ jobId, data }) => dispatch(jobId, { kind: 'progress', data }));
    events.on('completed', ({ jobId }) => dispatch(jobId, { kind: 'completed' }));
    events.on('failed', ({ jobId }) => dispatch(jobId, { kind: 'failed' }));
    events.on('removed', ({ jobId }) => dispatch(jobId, { kind: 'removed' }));
    return subscription;
  };

  return {
    async subscribe(queue, jobId, listener) {
      let subscription: Subscription | undefined;
      // Again if the reader was closed (its last subscriber left) while this one waited for it to open.
      while (!subscription) {
        let pending = subscriptions.get(queue);
        if (!pending) {
          pending = open(queue);
          subscriptions.set(queue, pending);
          pending.catch(() => subscriptions.delete(queue));
        }
        const opened = await pending;
        if (subscriptions.get(queue) === pending) subscription = opened;
      }
      subscription.count += 1;
      const forJob = subscription.listeners.get(jobId) ?? new Set();
      forJob.add(listener);
      subscription.listeners.set(jobId, forJob);
      let left = false;
      return async () => {
        if (left) return;
        left = true;
        forJob.delete(listener);
        if (forJob.size === 0) subscription.listeners.delete(jobId);
        subscription.count -= 1;
        if (subscription.count > 0) return;
        // The last subscriber: close its connection (the next one opens a fresh reader from its own "now").
        subscriptions.delete(queue);
        await closeQueueEvents(subscription.events);
      };
    },
    get openQueues() {
      return subscriptions.size;
    },
    async close() {
      const all = await Promise.allSettled([...subscriptions.values()]);
      subscriptions.clear();
      const readers = all.flatMap((result) => (result.status === 'fulfilled' ? [result.value.events] : []));
      await Promise.all(readers.map(closeQueueEvents));
    },
  };
}
