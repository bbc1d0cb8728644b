import { Redis } from 'ioredis';
import type { RedisOptions } from 'bullmq';
import type { Logger } from './logger.js';

// Keep reconnecting, no faster than every 100 ms - 2 s.
const reconnectDelay = (times: number) => Math.min(100 * times, 2000);

/**
 * The request path's connection: commands fail at once while Redis is away
 * instead of queueing, so a request never waits on Redis (the outbox covers it).
 */
export function createProducerRedis(redisUrl: string): Redis {
  return new Redis(redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 2000,
    connectTimeout: 2000,
    retryStrategy: reconnectDelay,
    // Concurrent requests' commands share one write and one round trip.
    enableAutoPipelining: true,
  });
}

/** Workers and QueueEvents open their own connections and wait for Redis to come back (BullMQ requires `maxRetriesPerRequest: null`). */
export function workerConnectionOptions(redisUrl: string): RedisOptions {
  return { url: redisUrl, maxRetriesPerRequest: null, retryStrategy: reconnectDelay };
}

/** Resolves when the connection is ready or after `ms`, whichever comes first: start-up need not fail without Redis. */
export async function waitUntilConnected(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      resolve(false);
    }, ms);
    const onReady = () => {
      clearTimeout(timer);
      resolve(true);
    };
    redis.once('ready', onReady);
  });
}

/** BullMQ loses jobs if Redis evicts keys; say so loudly at start (or at first connect). */
export async function warnUnlessNoEviction(redis: Redis, log: Logger): Promise<void> {
  if (redis.status !== 'ready') {
    redis.once('ready', () => void warnUnlessNoEviction(redis, log));
    return;
  }
  try {
    const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const policy = reply[1];
    if (policy !== 'noeviction') {
      log.warn({ maxmemoryPolicy: policy }, 'Redis maxmemory-policy is not noeviction: queued jobs may be evicted');
    }
  } catch (error) {
    log.warn({ err: error }, 'could not read Redis maxmemory-policy');
  }
}
