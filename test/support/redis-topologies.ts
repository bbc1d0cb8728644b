import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis, type RedisOptions } from 'ioredis';
import { EMAIL_QUEUE, type Queues } from '../../src/queues.js';
import { portIsFree, sleep, waitFor, type ReceivedEmail, type T } from './helpers.js';

const run = promisify(execFile);

/** One redis-server (or sentinel) process owned by a test: started, SIGKILLed and restarted by pid, never by name. */
export interface RedisProcess {
  port: number;
  readonly running: boolean;
  start(): Promise<void>;
  /** SIGKILL, like a crash: nothing is flushed, clients see their sockets reset. */
  kill(): Promise<void>;
}

function tempDir(t: T, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `errand-${label}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * `count` free ports whose port+10000 is free too: a cluster node also listens on its bus port (port + 10000).
 * Both stay below Linux's ephemeral range (32768-60999): there the OS hands out ports for every outgoing
 * connection and for freePort(), so a port found free — or a killed primary's port, during a failover — could
 * be taken by another test file's socket before redis-server binds it (again).
 */
export async function freePortsWithBus(count: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < count) {
    const port = 10000 + Math.floor(Math.random() * 12000);
    if (ports.includes(port) || ports.includes(port + 10000) || ports.includes(port - 10000)) continue;
    if ((await portIsFree(port)) && (await portIsFree(port + 10000))) ports.push(port);
  }
  return ports;
}

/** A short-lived connection for the test's own probes (no retries: a probe answers now or fails). */
export async function probeRedis<R>(port: number, fn: (redis: Redis) => Promise<R>, options: RedisOptions = {}): Promise<R> {
  const redis = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
    ...options,
  });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

async function answers(port: number, options: RedisOptions = {}): Promise<true | undefined> {
  try {
    return (await probeRedis(port, (r) => r.ping(), options)) === 'PONG' || undefined;
  } catch {
    return undefined;
  }
}

function redisProcess(t: T, port: number, args: string[], probeOptions: RedisOptions = {}): RedisProcess {
  let child: ChildProcess | undefined;
  const proc: RedisProcess = {
    port,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async start() {
      child = spawn('redis-server', args, { stdio: 'ignore' });
      await waitFor(
        () =>
          child!.exitCode !== null
            ? Promise.reject(new Error(`redis-server on ${port} exited (${child!.exitCode})`))
            : answers(port, probeOptions),
        10000,
        `redis-server on ${port}`,
      );
    },
    async kill() {
      if (!child || !proc.running) return;
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
  };
  t.teardown(() => proc.kill());
  return proc;
}

/** A fresh server's arguments: nothing kept on disk, errand's eviction policy; with `tlsOnly`, TLS on `port` and no plain-text port. */
function commonArgs(port: number, dir: string, options: { tlsOnly?: boolean } = {}): string[] {
  return [
    ...(options.tlsOnly ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)]),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--logfile',
    join(dir, `redis-${port}.log`),
    '--maxmemory-policy',
    'noeviction',
  ];
}

// ------------------------------------------------------------------------------------------------ cluster

export interface RedisClusterNodes {
  url: string;
  nodes: RedisProcess[];
  dir: string;
  /** The live master serving `key`'s slot, as the cluster says now. */
  primaryFor(key: string): Promise<RedisProcess>;
  /** Every live node reports cluster_state:ok and every replica's link to its master is up. */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
}

/** A Redis Cluster of fresh redis-server processes (`redis-cli --cluster create`), on free ports, gone at teardown. */
export async function startRedisCluster(
  t: T,
  options: { primaries?: number; replicasPerPrimary?: number; nodeTimeoutMs?: number } = {},
): Promise<RedisClusterNodes> {
  const { primaries = 3, replicasPerPrimary = 0, nodeTimeoutMs = 1000 } = options;
  const dir = tempDir(t, 'cluster');
  const ports = await freePortsWithBus(primaries * (1 + replicasPerPrimary));
  const nodes = ports.map((port) =>
    redisProcess(t, port, [
      ...commonArgs(port, dir),
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      join(dir, `nodes-${port}.conf`),
      '--cluster-node-timeout',
      String(nodeTimeoutMs),
    ]),
  );
  await Promise.all(nodes.map((node) => node.start()));
  // redis-cli waits for the nodes to agree ('Waiting for the cluster to join') without a bound of its own.
  await run(
    'redis-cli',
    ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicasPerPrimary), '--cluster-yes'],
    { timeout: 60000 },
  ).catch((error: { killed?: boolean; stdout?: string }) => {
    if (!error.killed) throw error;
    const tail = String(error.stdout ?? '')
      .trim()
      .split('\n')
      .slice(-3)
      .join(' | ');
    throw new Error(`timed out after 60 s waiting for redis-cli --cluster create on ${ports.join(', ')}; stdout: ${tail}`, {
      cause: error,
    });
  });

  const liveNodes = () => nodes.filter((node) => node.running);
  const cluster: RedisClusterNodes = {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    nodes,
    dir,
    async primaryFor(key) {
      const [node] = liveNodes();
      const port = await probeRedis(node.port, async (redis) => {
        const slot = await redis.cluster('KEYSLOT', key);
        const ranges = await redis.cluster('SLOTS');
        const range = ranges.find(([from, to]) => slot >= from && slot <= to);
        if (!range?.[2]) throw new Error(`no master serves slot ${slot}`);
        return range[2][1];
      });
      return nodes.find((n) => n.port === port)!;
    },
    async waitUntilHealthy(timeoutMs = 30000) {
      await waitFor(
        async () => {
          for (const node of liveNodes()) {
            try {
              const healthy = await probeRedis(node.port, async (redis) => {
                if (!/^cluster_state:ok\b/m.test(await redis.cluster('INFO'))) return false;
                const replication = await redis.info('replication');
                return !/^role:slave/m.test(replication) || /^master_link_status:up/m.test(replication);
              });
              if (!healthy) return undefined;
            } catch {
              return undefined;
            }
          }
          return true;
        },
        timeoutMs,
        'cluster_state:ok on every node, replicas in sync',
      );
    },
  };
  await cluster.waitUntilHealthy();
  return cluster;
}

// ------------------------------------------------------------------------------------------------ sentinel

export const SENTINEL_MASTER_NAME = 'errand-primary';

export interface RedisSentinelSet {
  url: string;
  primary: RedisProcess;
  replicas: RedisProcess[];
  sentinels: RedisProcess[];
  /** The primary's port as the sentinels report it now. */
  primaryPort(): Promise<number>;
}

/** A primary, its replicas and sentinels watching it with short timeouts, all fresh processes, gone at teardown. */
export async function startRedisSentinel(
  t: T,
  options: { replicas?: number; sentinels?: number; downAfterMs?: number; failoverTimeoutMs?: number } = {},
): Promise<RedisSentinelSet> {
  const { replicas: replicaCount = 1, sentinels: sentinelCount = 3, downAfterMs = 1000, failoverTimeoutMs = 3000 } = options;
  const dir = tempDir(t, 'sentinel');
  const [primaryPort, ...others] = await freePortsWithBus(1 + replicaCount + sentinelCount);
  const replicaPorts = others.slice(0, replicaCount);
  const sentinelPorts = others.slice(replicaCount);

  const primary = redisProcess(t, primaryPort, commonArgs(primaryPort, dir));
  await primary.start();
  const replicas = replicaPorts.map((port) =>
    redisProcess(t, port, [...commonArgs(port, dir), '--replicaof', '127.0.0.1', String(primaryPort)]),
  );
  await Promise.all(replicas.map((replica) => replica.start()));
  await waitFor(
    async () => {
      for (const replica of replicas) {
        const info = await probeRedis(replica.port, (r) => r.info('replication')).catch(() => '');
        if (!/^master_link_status:up/m.test(info)) return undefined;
      }
      return true;
    },
    20000,
    'replicas in sync',
  );

  const quorum = Math.floor(sentinelCount / 2) + 1;
  const sentinels = sentinelPorts.map((port) => {
    const conf = join(dir, `sentinel-${port}.conf`);
    // Sentinel rewrites its own config file (known replicas, epochs): one writable file per sentinel.
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `logfile ${join(dir, `sentinel-${port}.log`)}`,
        `sentinel monitor ${SENTINEL_MASTER_NAME} 127.0.0.1 ${primaryPort} ${quorum}`,
        `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} ${downAfterMs}`,
        `sentinel failover-timeout ${SENTINEL_MASTER_NAME} ${failoverTimeoutMs}`,
        `sentinel parallel-syncs ${SENTINEL_MASTER_NAME} 1`,
        '',
      ].join('\n'),
    );
    return redisProcess(t, port, [conf, '--sentinel']);
  });
  await Promise.all(sentinels.map((sentinel) => sentinel.start()));
  // A failover needs every sentinel to know the replicas and enough of the other sentinels for a vote.
  await waitFor(
    async () => {
      for (const sentinel of sentinels) {
        const known = await probeRedis(sentinel.port, async (r) => {
          const replicasSeen = (await r.call('SENTINEL', 'REPLICAS', SENTINEL_MASTER_NAME)) as unknown[];
          const peersSeen = (await r.call('SENTINEL', 'SENTINELS', SENTINEL_MASTER_NAME)) as unknown[];
          return replicasSeen.length >= replicaCount && peersSeen.length >= sentinelCount - 1;
        }).catch(() => false);
        if (!known) return undefined;
      }
      return true;
    },
    30000,
    'sentinels aware of the replicas and of each other',
  );

  return {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${SENTINEL_MASTER_NAME}`,
    primary,
    replicas,
    sentinels,
    async primaryPort() {
      for (const sentinel of sentinels.filter((s) => s.running)) {
        const addr = await probeRedis(
          sentinel.port,
          (r) => r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER_NAME) as Promise<[string, string]>,
        ).catch(() => undefined);
        if (addr) return Number(addr[1]);
      }
      throw new Error('no sentinel answered');
    },
  };
}

// ------------------------------------------------------------------------------------------------ TLS

export interface TlsRedis {
  port: number;
  /** The self-signed certificate (PEM file) that also serves as the CA. */
  caPath: string;
  server: RedisProcess;
}

/** A redis-server listening only on TLS, with a self-signed certificate for 127.0.0.1 made by openssl. */
export async function startTlsRedis(t: T): Promise<TlsRedis> {
  const dir = tempDir(t, 'tls');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  await run(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { timeout: 30000 },
  );
  const [port] = await freePortsWithBus(1);
  const ca = readFileSync(certPath, 'utf8');
  const server = redisProcess(
    t,
    port,
    [
      // No plain-text port: only a TLS client gets in.
      ...commonArgs(port, dir, { tlsOnly: true }),
      '--tls-cert-file',
      certPath,
      '--tls-key-file',
      keyPath,
      '--tls-ca-cert-file',
      certPath,
      '--tls-auth-clients',
      'no',
    ],
    { tls: { ca } },
  );
  await server.start();
  return { port: port, caPath: certPath, server };
}

/**
 * After a failover test's emails are in: waits until the email queue has nothing active, waiting or delayed, then
 * long enough for a lapsed job lock (4 s in these tests) to be found by the stalled check (every 2 s), and counts
 * the messages each address received.
 */
export async function settledEmailsPerAddress(queues: Queues, received: readonly ReceivedEmail[]): Promise<Map<string, number>> {
  await waitFor(
    async () => {
      const counts = await queues[EMAIL_QUEUE].getJobCounts('active', 'wait', 'delayed', 'prioritized');
      return Object.values(counts).every((n) => n === 0) || undefined;
    },
    30000,
    'email queue idle',
  );
  await sleep(4500);
  const perAddress = new Map<string, number>();
  for (const email of received) perAddress.set(email.to[0], (perAddress.get(email.to[0]) ?? 0) + 1);
  return perAddress;
}
