// Redis capacity for errand's job mix: jobs added and processed per second on one redis-server vs a 3-primary
// Redis Cluster (both started here, private, no persistence), with and without the worker limiter, with every
// queue under one hash tag (errand's default `{prefix}`) or each queue under its own tag (spread over shards).
//
// The jobs are errand's email jobs as Redis sees them (half verification emails with their priority, half tracking
// emails; a job id per outbox row, attempts, backoff, removeOnComplete by age and count, events stream capped at
// 1000) with a processor that does nothing: PostgreSQL and SMTP are left out on purpose, so the figure is
// Redis + BullMQ's ceiling, not the email path's (docs/BENCHMARKS.md).
// Adders and workers run together for BENCH_DURATION_S per run, on errand's own connection factory.
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import { Cluster, type Redis } from 'ioredis';
import { COMPLETED_JOBS_KEPT, FAILED_JOBS_KEPT } from '../src/core/job-registry.js';
import { createRedis, type RedisClient } from '../src/core/redis.js';
import { EMAIL_QUEUE, jobOptionsFor } from '../src/queues.js';
import { outboxJobId } from '../src/db/outbox.js';
import { clusterQueuePrefix, parseRedisUrl, type RedisTopology } from '../src/core/redis-url.js';
import { startRedisCluster, probeRedis } from '../test/support/redis-topologies.js';
import { machineInfo, onCleanup, progress, report, round, RUN_SECONDS, runScenario, sleep, startPrivateRedis } from './lib.js';

const QUEUES = Number(process.env.BENCH_REDIS_QUEUES ?? 3);
const ADDERS_PER_QUEUE = Number(process.env.BENCH_REDIS_ADDERS ?? 16);
const WORKER_CONCURRENCY = Number(process.env.BENCH_REDIS_CONCURRENCY ?? 50);
// High enough never to bind: what is measured is the limiter's bookkeeping, not a rate cap.
const UNBINDING_LIMITER = { max: 1_000_000, duration: 1000 };

interface Run {
  target: string;
  tagging: string;
  queues: number;
  limiter: boolean;
  addedPerS: number;
  processedPerS: number;
  backlogAtEnd: number;
  /** CPU of the busiest redis-server during the run (100 = one core). */
  redisCpuPct: number;
  /** CPU of this Node process (adders + workers) during the run. */
  clientCpuPct: number;
}

function uuidFor(n: number): string {
  return `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
}

/** used_cpu_user + used_cpu_sys of every primary, in seconds. */
async function primaryCpu(ports: number[]): Promise<number[]> {
  return Promise.all(
    ports.map((port) =>
      probeRedis(port, async (redis: Redis) => {
        const info = await redis.info('cpu');
        const read = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
        return read('used_cpu_user') + read('used_cpu_sys');
      }),
    ),
  );
}

async function measure(options: {
  target: string;
  tagging: string;
  topology: RedisTopology;
  primaryPorts: number[];
  prefixes: string[];
  limiter: boolean;
}): Promise<Run> {
  const producer = createRedis(options.topology, 'producer');
  const workerRedis = createRedis(options.topology, 'worker');
  const clients: RedisClient[] = [producer, workerRedis];
  for (const client of clients) client.on('error', () => {});
  const queues = options.prefixes.map(
    (prefix, i) =>
      new Queue(`q${i}`, {
        connection: producer,
        prefix,
        streams: { events: { maxLen: 1000 } },
        defaultJobOptions: {
          attempts: 3,
          backoff: { type: 'exponential', delay: 60000 },
          removeOnComplete: COMPLETED_JOBS_KEPT,
          removeOnFail: FAILED_JOBS_KEPT,
        },
      }),
  );
  await Promise.all(queues.map((queue) => queue.waitUntilReady()));
  let processed = 0;
  const workers = options.prefixes.map(
    (prefix, i) =>
      new Worker(`q${i}`, async () => undefined, {
        connection: workerRedis,
        prefix,
        concurrency: WORKER_CONCURRENCY,
        removeOnComplete: COMPLETED_JOBS_KEPT,
        ...(options.limiter ? { limiter: UNBINDING_LIMITER } : {}),
      }),
  );
  for (const worker of workers) {
    worker.on('error', () => {});
    worker.on('completed', () => (processed += 1));
  }
  await Promise.all(workers.map((worker) => worker.waitUntilReady()));

  let added = 0;
  let running = true;
  let next = 0;
  const cpuBefore = await primaryCpu(options.primaryPorts);
  const clientBefore = process.cpuUsage();
  const startedAt = performance.now();
  const processedAtStart = processed;
  const adders = queues.flatMap((queue) =>
    Array.from({ length: ADDERS_PER_QUEUE }, async () => {
      while (running) {
        // errand's email jobs, half of each kind: ids only in the payload, a job id per outbox row, and the
        // verification email's priority (a prioritised job costs BullMQ a sorted-set insert more).
        const id = (next += 1);
        const [name, data] =
          id % 2 === 0 ? ['email-verification', { userId: uuidFor(id) }] : ['order-tracking-link', { orderId: uuidFor(id) }];
        await queue.add(name, data, { jobId: outboxJobId(String(id)), ...jobOptionsFor(EMAIL_QUEUE, name) });
        added += 1;
      }
    }),
  );
  await sleep(RUN_SECONDS * 1000);
  running = false;
  const elapsedS = (performance.now() - startedAt) / 1000;
  const processedInRun = processed - processedAtStart;
  const clientCpu = process.cpuUsage(clientBefore);
  const cpuAfter = await primaryCpu(options.primaryPorts);
  await Promise.all(adders);
  const backlog = (await Promise.all(queues.map((queue) => queue.getWaitingCount()))).reduce((a, b) => a + b, 0);

  await Promise.all(workers.map((worker) => worker.close(true)));
  await Promise.all(queues.map((queue) => queue.obliterate({ force: true }).catch(() => undefined)));
  await Promise.all(queues.map((queue) => queue.close()));
  for (const client of clients) client.disconnect();

  return {
    target: options.target,
    tagging: options.tagging,
    queues: queues.length,
    limiter: options.limiter,
    addedPerS: round(added / elapsedS, 0),
    processedPerS: round(processedInRun / elapsedS, 0),
    backlogAtEnd: backlog,
    redisCpuPct: round(Math.max(...cpuAfter.map((after, i) => ((after - cpuBefore[i]) / elapsedS) * 100)), 0),
    clientCpuPct: round(((clientCpu.user + clientCpu.system) / 1e6 / elapsedS) * 100, 0),
  };
}

/** One hash tag per queue, each on a different primary: a tag per primary found by asking the cluster. */
async function tagsOnDistinctPrimaries(cluster: Cluster, count: number): Promise<string[]> {
  const tags: string[] = [];
  const owners = new Set<string>();
  for (let i = 0; tags.length < count && i < 10_000; i += 1) {
    const tag = `bench-q${i}`;
    const slot = await cluster.cluster('KEYSLOT', tag);
    const ranges = await cluster.cluster('SLOTS');
    const owner = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1];
    if (owner === undefined || owners.has(String(owner))) continue;
    owners.add(String(owner));
    tags.push(`{${tag}}`);
  }
  return tags;
}

await runScenario('redis-capacity', async () => {
  const machine = await machineInfo();
  const runs: Run[] = [];
  const prefixesFor = (tag: string, n: number) => Array.from({ length: n }, () => tag);

  progress('one redis-server');
  const single = await startPrivateRedis();
  const singleTopology = parseRedisUrl(single.url);
  for (const queues of [1, QUEUES]) {
    for (const limiter of [false, true]) {
      progress(`single server, ${queues} queue(s), limiter ${limiter ? 'on' : 'off'}`);
      runs.push(
        await measure({
          target: 'single',
          tagging: 'none',
          topology: singleTopology,
          primaryPorts: [single.port],
          prefixes: prefixesFor('bench', queues),
          limiter,
        }),
      );
    }
  }
  await single.kill();

  progress('a 3-primary cluster');
  const cluster = await startRedisCluster({ teardown: (fn) => onCleanup('stop the bench cluster', fn) }, { primaries: 3 });
  const clusterTopology = parseRedisUrl(cluster.url);
  const primaryPorts = cluster.nodes.map((node) => node.port);
  const probe = createRedis(clusterTopology, 'worker') as Cluster;
  probe.on('error', () => {});
  const perQueueTags = await tagsOnDistinctPrimaries(probe, QUEUES);
  probe.disconnect();
  const cases: Array<{ tagging: string; prefixes: string[] }> = [
    { tagging: 'per prefix {bench}', prefixes: prefixesFor(clusterQueuePrefix('bench'), 1) },
    { tagging: 'per prefix {bench}', prefixes: prefixesFor(clusterQueuePrefix('bench'), QUEUES) },
    { tagging: 'per queue {bench-qN}', prefixes: perQueueTags },
  ];
  for (const { tagging, prefixes } of cases) {
    for (const limiter of [false, true]) {
      progress(`cluster, ${tagging}, ${prefixes.length} queue(s), limiter ${limiter ? 'on' : 'off'}`);
      runs.push(await measure({ target: 'cluster (3 primaries)', tagging, topology: clusterTopology, primaryPorts, prefixes, limiter }));
    }
  }

  report(
    'redis-capacity',
    machine,
    { runSeconds: RUN_SECONDS, addersPerQueue: ADDERS_PER_QUEUE, workerConcurrency: WORKER_CONCURRENCY, runs },
    runs.map((run) => ({ ...run })),
  );
});
