import { setTimeout as delay } from 'node:timers/promises';
import type { QueueEvents } from 'bullmq';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.js';
import type { RedisTopology } from './redis-url.js';

export { parseRedisUrl, describeRedisTopology, type RedisTopology } from './redis-url.js';

/** A connection to errand's Redis, whatever its topology: one server (direct or found through Sentinel) or a Cluster. */
export type RedisClient = Redis | Cluster;

/**
 * `producer`: the request path's connection. Commands fail at once while Redis is away instead of queueing, so a
 * request never waits on Redis (the outbox covers it). BullMQ Queues accept it.
 * `worker`: Workers and QueueEvents wait for Redis to come back (BullMQ requires `maxRetriesPerRequest: null`).
 */
export type RedisProfile = 'producer' | 'worker';

// Keep reconnecting, no faster than every 100 ms - 2 s.
const reconnectDelay = (times: number) => Math.min(100 * times, 2000);

/** How often a Cluster client re-reads the slots and re-creates lost node connections (ioredis 5's default). */
export const SLOTS_REFRESH_MS = 5000;

function profileOptions(profile: RedisProfile): RedisOptions {
  return profile === 'producer'
    ? // No auto-pipelining: ioredis builds a Pipeline per batch, copying every BullMQ script onto it, and that cost
      // more CPU than the writes it saved (compare.mjs, same run: 0.57 → 0.45 ms CPU per signup without it).
      { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000, connectTimeout: 2000, enableAutoPipelining: false }
    : { maxRetriesPerRequest: null };
}

/**
 * Options of every connection, whatever its profile. RESP2, not ioredis 6's default RESP3: on a loaded machine a
 * Cluster's producer connection whose first commands hit the 2 s command timeout stayed `ready` and timed out every
 * later command for minutes (no email published; RESP3's handshake is the suspect, not pinned down). test/redis/cluster-failover.test.ts, 4 runs at
 * once beside 4 CPU burners: 4 of 4 failed that way on RESP3, 8 of 8 passed on RESP2. errand uses no RESP3-only
 * feature (BullMQ does not need it).
 */
const COMMON_OPTIONS: RedisOptions = { protocol: 2 };

function profileOptionsWithCommon(profile: RedisProfile): RedisOptions {
  return { ...COMMON_OPTIONS, ...profileOptions(profile) };
}

export interface CreateRedisOptions {
  /** Connect at the first command instead of now (a role that may never use the connection). */
  lazyConnect?: boolean;
}

/** The one place errand opens a Redis connection: every client comes from REDIS_URL's topology and a profile. */
export function createRedis(topology: RedisTopology, profile: RedisProfile, options: CreateRedisOptions = {}): RedisClient {
  const { enableOfflineQueue, enableAutoPipelining, ...perConnection } = profileOptionsWithCommon(profile);
  const credentials = { username: topology.username, password: topology.password };
  const lazyConnect = options.lazyConnect ?? false;
  switch (topology.kind) {
    case 'single':
      return new Redis({
        ...topology.address,
        db: topology.db,
        ...credentials,
        ...(topology.tls ? { tls: topology.tls.ca === undefined ? {} : { ca: topology.tls.ca } } : {}),
        ...perConnection,
        enableOfflineQueue,
        enableAutoPipelining,
        retryStrategy: reconnectDelay,
        lazyConnect,
      });
    case 'sentinel':
      return new Redis({
        sentinels: topology.sentinels,
        name: topology.masterName,
        ...credentials,
        ...perConnection,
        enableOfflineQueue,
        enableAutoPipelining,
        // Asks the sentinels again on every reconnect, so a lost primary is replaced by the promoted one.
        retryStrategy: reconnectDelay,
        sentinelRetryStrategy: reconnectDelay,
        // A demoted primary drops its clients, so the reconnect asks the sentinels again (tested); should a connection
        // survive the demotion, its first write answers READONLY: reconnect then too. Not ioredis' failoverDetector: a
        // +switch-master arriving while the connection is reconnecting (the usual case when the primary died) aborted
        // that attempt and left the connection ended for good — errand never became ready again (seen in tests).
        reconnectOnError: (err) => err.message.startsWith('READONLY'),
        lazyConnect,
      });
    case 'cluster': {
      // Per-node connection options go in redisOptions; queueing, pipelining and reconnecting are the Cluster's own.
      const clusterOptions: ClusterOptions = {
        redisOptions: { ...credentials, ...perConnection },
        enableOfflineQueue,
        enableAutoPipelining,
        clusterRetryStrategy: reconnectDelay,
        // ioredis 6.0 documents a 5 s default here but its defaults leave it out: no periodic refresh at all. A node
        // connection that ends (a reset, or connect ETIMEDOUT on a starved process: seen at start-up under load) is
        // dropped from the pool for good (node connections never reconnect), so that primary's CONFIG GET, and
        // commands sent while its slots still name it, failed for the rest of the process. A refresh re-creates it.
        slotsRefreshInterval: SLOTS_REFRESH_MS,
        lazyConnect,
      };
      return new Cluster(topology.nodes, clusterOptions);
    }
  }
}

/** Compatibility name: the request path's fail-fast connection. */
export function createProducerRedis(topology: RedisTopology): RedisClient {
  return createRedis(topology, 'producer');
}

/** Resolves when the connection is ready or after `ms`, whichever comes first: start-up need not fail without Redis. */
export async function waitUntilConnected(redis: RedisClient, ms: number): Promise<boolean> {
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

/** How long a QueueEvents gets to close: it only interrupts a blocking read, a matter of milliseconds. */
const QUEUE_EVENTS_CLOSE_MS = 1000;

/**
 * Closes a QueueEvents, waiting at most QUEUE_EVENTS_CLOSE_MS. Its close() disconnects its blocking connection and
 * waits for ioredis' `end` event, which never comes while that connection is reconnecting (Redis away, or back but
 * not yet reconnected to): ioredis' disconnect() then only clears the retry timer. Reproduced on one server and on a
 * Cluster; it was the `redis/cluster` teardown hang after a whole-cluster outage. Nothing is left running past the
 * deadline: the retry timer is cleared, and the read it abandons holds no handle.
 */
export async function closeQueueEvents(events: QueueEvents): Promise<void> {
  await Promise.race([events.close().catch(() => undefined), delay(QUEUE_EVENTS_CLOSE_MS, undefined, { ref: false })]);
}

/** The servers that take writes: the cluster's masters, or the one server. */
function primaries(redis: RedisClient): Redis[] {
  return redis instanceof Cluster ? redis.nodes('master') : [redis];
}

/** BullMQ loses jobs if Redis evicts keys; say so loudly at start (or at first connect), for every primary. */
export async function warnUnlessNoEviction(redis: RedisClient, log: Logger): Promise<void> {
  if (redis.status !== 'ready') {
    redis.once('ready', () => void warnUnlessNoEviction(redis, log));
    return;
  }
  await Promise.all(
    primaries(redis).map(async (node) => {
      const server = `${node.options.host}:${node.options.port}`;
      try {
        const reply = await node.config('GET', 'maxmemory-policy');
        const policy = reply[1];
        if (policy !== 'noeviction') {
          log.warn({ server, maxmemoryPolicy: policy }, 'Redis maxmemory-policy is not noeviction: queued jobs may be evicted');
        }
      } catch (error) {
        log.warn({ server, err: error }, 'could not read Redis maxmemory-policy');
      }
    }),
  );
}

/**
 * Readiness of the topology, beyond "the socket is open": a cluster must say `cluster_state:ok` (every slot
 * served), and a server found through Sentinel must be a primary (writes would fail on a demoted one).
 * Throws when not ready; the caller reports only that.
 */
export async function checkRedisReady(redis: RedisClient): Promise<void> {
  if (redis instanceof Cluster) {
    const info = await redis.cluster('INFO');
    if (!/^cluster_state:ok\b/m.test(info)) throw new Error('cluster state is not ok');
    return;
  }
  if (redis.options.sentinels) {
    const role = (await redis.call('ROLE')) as [string, ...unknown[]];
    if (role[0] !== 'master') throw new Error(`connected to a ${role[0]}, not a primary`);
    return;
  }
  await redis.ping();
}
