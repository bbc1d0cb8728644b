import type { FastifyInstance } from 'fastify';
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { Logger } from './logger.js';
import type { RedisClient } from './redis.js';

// INCRBY n + first-hit PEXPIRE in one atomic step on one key (so it works on a cluster too); returns [count, ms left].
// n > 1 when several requests of one client arrived together (see `countInRedis` below).
const INCR_WITH_WINDOW = `
local current = redis.call('INCRBY', KEYS[1], ARGV[2])
if current == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {current, ttl}
`;

type Incr = Parameters<FastifyRateLimitStore['incr']>;
type IncrCallback = Incr[1];

interface LocalWindow {
  count: number;
  resetAt: number;
}

const LOCAL_KEYS_MAX = 10000;

/** How long a request waits for Redis to count it before counting it in this process instead. */
const REDIS_COUNT_DEADLINE_MS = 200;

/** The per-process fallback: a fixed window per key, bounded in size. */
class LocalWindows {
  private readonly windows = new Map<string, LocalWindow>();

  incr(key: string, windowMs: number): { current: number; ttl: number } {
    const now = Date.now();
    let window = this.windows.get(key);
    if (!window || window.resetAt <= now) {
      if (this.windows.size >= LOCAL_KEYS_MAX) this.prune(now);
      window = { count: 0, resetAt: now + windowMs };
      this.windows.set(key, window);
    }
    window.count += 1;
    return { current: window.count, ttl: window.resetAt - now };
  }

  private prune(now: number): void {
    for (const [key, window] of this.windows) if (window.resetAt <= now) this.windows.delete(key);
    // Still full of live windows: forget the oldest ones (Map keeps insertion order).
    for (const key of this.windows.keys()) {
      if (this.windows.size < LOCAL_KEYS_MAX) break;
      this.windows.delete(key);
    }
  }
}

export interface RateLimitStoreDeps {
  redis: RedisClient;
  log: Logger;
  /** Redis key prefix (QUEUE_PREFIX), so one Redis can serve several errand deployments. */
  keyPrefix: string;
}

/**
 * A store for @fastify/rate-limit that counts in Redis (shared by every
 * replica) and falls back to a per-process count when Redis is unreachable:
 * the plugin's `skipOnError` would mean no limit at all during an outage, and
 * its Redis store would answer 500. The fail-fast producer connection is
 * used: with Redis away a request is counted locally at once instead of waiting.
 */
export function createRateLimitStore(deps: RateLimitStoreDeps): FastifyRateLimitStoreCtor {
  const local = new LocalWindows();
  let onFallback = false;
  const redis = deps.redis;
  const fallBack = (key: string, windowMs: number, cb: IncrCallback, reason: string) => {
    if (!onFallback) {
      onFallback = true;
      deps.log.warn({ reason }, 'rate limit: Redis unreachable, counting per process until it is back');
    }
    cb(null, local.incr(key, windowMs));
  };

  // Plain EVAL, not defineCommand: ioredis' EVALSHA-then-EVAL retry fails inside a pipeline ("results[i] is not
  // iterable"), should the connection ever batch commands again; the script is a few hundred bytes.
  // A Redis that is connected but slow to write (CLIENT PAUSE, a long script, a stalled replica) must not hold the
  // request: after REDIS_COUNT_DEADLINE_MS the hits are counted locally (Redis may still count them: stricter, never looser).
  const incrBy = (key: string, windowMs: number, hits: number) => {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${REDIS_COUNT_DEADLINE_MS} ms`)), REDIS_COUNT_DEADLINE_MS);
    });
    const counted = redis.eval(INCR_WITH_WINDOW, 1, key, windowMs, hits) as Promise<[number, number]>;
    return Promise.race([counted, deadline]).finally(() => clearTimeout(timer));
  };

  // Hits on one key that arrive in the same turn of the event loop share one INCRBY: each still gets its own
  // count (the batch's counts are consecutive, in arrival order), so the limit is exactly as strict, but a client
  // sending many requests at once costs one Redis command per turn instead of one per request.
  const pending = new Map<string, { windowMs: number; callbacks: IncrCallback[] }>();
  const flush = () => {
    const batches = [...pending];
    pending.clear();
    for (const [key, { windowMs, callbacks }] of batches) {
      incrBy(key, windowMs, callbacks.length).then(
        ([current, ttl]) => {
          if (onFallback) {
            onFallback = false;
            deps.log.info('rate limit: counting in Redis again');
          }
          const first = Number(current) - callbacks.length;
          callbacks.forEach((cb, i) => cb(null, { current: first + i + 1, ttl: Number(ttl) }));
        },
        (err: Error) => callbacks.forEach((cb) => fallBack(key, windowMs, cb, err.message)),
      );
    }
  };
  const countInRedis = (key: string, windowMs: number, cb: IncrCallback) => {
    const batch = pending.get(key);
    if (batch) return void batch.callbacks.push(cb);
    if (pending.size === 0) setImmediate(flush);
    pending.set(key, { windowMs, callbacks: [cb] });
  };

  class RedisWithLocalFallback implements FastifyRateLimitStore {
    constructor(private readonly scope = 'global') {}

    incr(key: string, cb: IncrCallback, timeWindow: number): void {
      const fullKey = `${deps.keyPrefix}:rate-limit:${this.scope}:${key}`;
      if (redis.status !== 'ready') return fallBack(fullKey, timeWindow, cb, `redis ${redis.status}`);
      countInRedis(fullKey, timeWindow, cb);
    }

    // The plugin passes the route's merged options, the route itself under `routeInfo`.
    // (the declared type says RouteOptions; the runtime value is what the plugin's own RedisStore reads).
    child(options: Parameters<FastifyRateLimitStore['child']>[0]): FastifyRateLimitStore {
      // One count per route: a client's signups do not use up its orders.
      const route = (options as unknown as { routeInfo?: { method?: string | string[]; url?: string } }).routeInfo ?? {};
      return new RedisWithLocalFallback(`${[route.method ?? ''].flat().join(',')}${route.url ?? ''}`);
    }
  }
  return RedisWithLocalFallback as unknown as FastifyRateLimitStoreCtor;
}

/**
 * Registers the limiter, off by default: a route opts in with
 * `config: { rateLimit: {} }` (signup and orders; never the webhook, whose
 * sender is one provider address). Over the limit: 429 in Fastify's error
 * shape with `Retry-After` (seconds).
 */
export async function registerRateLimit(app: FastifyInstance, deps: RateLimitStoreDeps & { max: number; windowMs: number }): Promise<void> {
  await app.register(rateLimit, {
    global: false,
    max: deps.max,
    timeWindow: deps.windowMs,
    store: createRateLimitStore(deps),
    // The default key is request.ip (IPv6 grouped by subnet): the socket's address, or
    // X-Forwarded-For's as far as TRUST_PROXY trusts it.
    errorResponseBuilder: (_request, context) =>
      Object.assign(new Error(`rate limit exceeded, retry in ${Math.max(1, Math.ceil(context.ttl / 1000))} s`), {
        statusCode: context.statusCode,
      }),
  });
}
