import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import pg from 'pg';
import { Redis } from 'ioredis';
import { SMTPServer } from 'smtp-server';
import autocannon, { type Result } from 'autocannon';

// Bench scripts are tools, not errand: they may read their own knobs from the environment.
export const BASE_DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432';
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Seconds per fixed-duration load run (BENCH_DURATION_S=3 for a quick smoke run). */
export const RUN_SECONDS = Number(process.env.BENCH_DURATION_S ?? 10);
export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- cleanup

const cleanups: Array<{ what: string; fn: () => unknown }> = [];

/**
 * Registers a teardown step; they run in reverse order when the scenario ends (or on Ctrl-C). The returned function
 * runs this one step now instead (once), for what a scenario is done with before its end.
 */
export function onCleanup(what: string, fn: () => unknown): () => Promise<void> {
  const entry = { what, fn };
  cleanups.push(entry);
  return async () => {
    const index = cleanups.indexOf(entry);
    if (index === -1) return;
    cleanups.splice(index, 1);
    await fn();
  };
}

async function runCleanups(): Promise<void> {
  while (cleanups.length > 0) {
    const { what, fn } = cleanups.pop()!;
    try {
      await fn();
    } catch (error) {
      process.stderr.write(`cleanup "${what}" failed: ${(error as Error).message}\n`);
    }
  }
}

/** Runs a scenario and always tears down what it started; exit code 1 on failure. */
export async function runScenario(name: string, body: () => Promise<void>): Promise<void> {
  const onSignal = () => {
    process.stderr.write(`${name}: interrupted, cleaning up\n`);
    void runCleanups().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await body();
  } catch (error) {
    process.stderr.write(`${name} failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  } finally {
    await runCleanups();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---------------------------------------------------------------- PostgreSQL and Redis

/** Runs `work` on a connection to the server's maintenance database (`postgres`), closed afterwards. */
export async function onMaintenanceDb<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: `${BASE_DATABASE_URL}/postgres` });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A fresh database URL (errand's start-up creates it); dropped WITH (FORCE) at cleanup. */
export function freshDatabaseUrl(): string {
  const name = uniqueName('errand_bench');
  onCleanup(`drop database ${name}`, () =>
    onMaintenanceDb((client) => client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`)),
  );
  return `${BASE_DATABASE_URL}/${name}`;
}

/** A fresh BullMQ prefix; its keys are deleted at cleanup. */
export function freshQueuePrefix(redisUrl = REDIS_URL): string {
  const prefix = uniqueName('bench');
  onCleanup(`delete ${prefix}:* keys`, () => deleteRedisKeys(redisUrl, `${prefix}:*`));
  return prefix;
}

export async function deleteRedisKeys(url: string, pattern: string): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length) await redis.unlink(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * A free port below the kernel's ephemeral range (32768+ by default): other
 * processes on the machine that listen on port 0 then cannot take it between
 * this check and the bench's child binding it.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

export interface PrivateRedis {
  url: string;
  port: number;
  kill(): Promise<void>;
  start(): Promise<void>;
}

/** A `redis-server` owned by the bench (no persistence), so it can be killed and restarted on the same port. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'],
      {
        stdio: 'ignore',
      },
    );
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => {});
    for (let i = 0; ; i++) {
      try {
        await probe.connect();
        await probe.ping();
        break;
      } catch {
        if (i > 200) throw new Error(`private redis on ${port} did not start`);
        await sleep(20);
      }
    }
    probe.disconnect();
  };
  const kill = async () => {
    const current = proc;
    if (!current || current.exitCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGKILL');
    await exited;
  };
  await start();
  onCleanup(`stop private redis :${port}`, kill);
  return { url: `redis://127.0.0.1:${port}`, port, kill, start };
}

// ---------------------------------------------------------------- SMTP sink

export interface SmtpSink {
  url: string;
  /** performance.now() of every accepted message, in arrival order. */
  receivedAt: number[];
  /** Envelope recipients of every accepted message, parallel to `receivedAt`. */
  recipients: string[][];
  close(): Promise<void>;
}

/** Accepts every message (after `delayMs`, to mimic a slow provider) and records when it arrived. */
export async function startSmtpSink(options: { delayMs?: number } = {}): Promise<SmtpSink> {
  const delayMs = options.delayMs ?? 0;
  const receivedAt: number[] = [];
  const recipients: string[][] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      stream.on('data', () => {});
      stream.on('end', () => {
        receivedAt.push(performance.now());
        recipients.push(session.envelope.rcptTo.map((rcpt) => rcpt.address));
        if (delayMs > 0) setTimeout(() => callback(), delayMs);
        else callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as net.AddressInfo;
  let closed = false;
  const close = () =>
    new Promise<void>((resolve) => {
      if (closed) return resolve();
      closed = true;
      server.close(() => resolve());
    });
  onCleanup(`stop SMTP sink :${port}`, close);
  return { url: `smtp://127.0.0.1:${port}`, receivedAt, recipients, close };
}

// ---------------------------------------------------------------- child processes

export interface Child {
  proc: ChildProcess;
  url: string;
  port: number;
  /** performance.now() when spawned. */
  spawnedAt: number;
  /** ms from spawn to the first /readyz 200. */
  readyMs: number;
  /** Last lines of the child's output, for error messages. */
  output: string[];
  rssMb(): number;
  stop(): Promise<number | null>;
}

/** Environment of a bench errand: quiet logs, its own database and prefix. */
export function errandEnv(overrides: Record<string, string>): Record<string, string> {
  return {
    // Not production: that refuses development secrets and an unset SMTP_URL (the export and import benches send no mail).
    NODE_ENV: 'benchmark',
    ROLE: 'all',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    REDIS_URL,
    PAYMENT_WEBHOOK_SECRET: 'bench-webhook-secret-0123456789',
    LINK_SECRET: 'bench-link-secret-0123456789abcdef',
    // Flat-out load comes from one address: the per-client limit is still checked on every request, never reached
    // (without this every request after the 20th is a 429 and the bench measures refusals).
    RATE_LIMIT_MAX: '1000000000',
    ...overrides,
  };
}

/**
 * Spawns `node [nodeArgs] --import tsx <script>` (one process, so its pid is
 * the server's pid for RSS and profiles; `tsx: false` for built JavaScript)
 * and waits for GET `readyPath` 200.
 */
export async function spawnServer(
  script: string,
  env: Record<string, string>,
  options: { nodeArgs?: string[]; readyPath?: string; readyTimeoutMs?: number; tsx?: boolean } = {},
): Promise<Child> {
  const port = Number(env.PORT);
  const url = `http://127.0.0.1:${port}`;
  const output: string[] = [];
  const spawnedAt = performance.now();
  const loader = options.tsx === false ? [] : ['--import', 'tsx'];
  const proc = spawn(process.execPath, [...(options.nodeArgs ?? []), ...loader, script], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) if (line) output.push(line.slice(0, 500));
    if (output.length > 50) output.splice(0, output.length - 50);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));

  const stop = async (): Promise<number | null> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  onCleanup(`stop ${script} pid ${proc.pid}`, stop);

  const deadline = spawnedAt + (options.readyTimeoutMs ?? 30_000);
  const readyUrl = `${url}${options.readyPath ?? '/readyz'}`;
  let readyMs = -1;
  while (readyMs < 0) {
    if (proc.exitCode !== null) throw new Error(`${script} exited with ${proc.exitCode} before ready:\n${output.join('\n')}`);
    if (performance.now() > deadline) throw new Error(`${script} not ready in time:\n${output.join('\n')}`);
    try {
      const response = await fetch(readyUrl);
      await response.arrayBuffer();
      if (response.status === 200) readyMs = performance.now() - spawnedAt;
    } catch {
      // not listening yet
    }
    if (readyMs < 0) await sleep(10);
  }
  // A 200 from someone else on that port would look like readiness; our child would then die on EADDRINUSE.
  await sleep(200);
  if (proc.exitCode !== null) throw new Error(`${script} exited with ${proc.exitCode} right after ready:\n${output.join('\n')}`);
  return { proc, url, port, spawnedAt, readyMs, output, rssMb: () => rssMb(proc.pid!), stop };
}

/** Resident set size of a process, from /proc (Linux). */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/** A Writable that drops everything (pino destination for in-process errand). */
export function nullStream(): Writable {
  return new Writable({ write: (_chunk, _encoding, callback) => callback() });
}

// ---------------------------------------------------------------- HTTP load

let emailCounter = 0;
const runTag = randomBytes(3).toString('hex');

/** A never-repeated address, so every signup is a new user (the expensive path: insert + outbox + publish). */
export function uniqueEmail(): string {
  emailCounter += 1;
  return `bench-${runTag}-${emailCounter}@example.com`;
}

export interface LoadSummary {
  run: string;
  targetRate: number | 'max';
  connections: number;
  durationS: number;
  requests: number;
  rps: number;
  p50: number;
  p97_5: number;
  p99: number;
  max: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

/** POST /auth/signup with unique emails, at `overallRate` req/s or flat out. */
export async function signupLoad(options: {
  run: string;
  url: string;
  connections: number;
  overallRate?: number;
  durationS?: number;
  amount?: number;
  /** Called for every response with its status and latency in ms (autocannon's 'response' event). */
  onResponse?: (status: number, latencyMs: number) => void;
}): Promise<LoadSummary> {
  const instance = autocannon({
    url: `${options.url}/auth/signup`,
    connections: options.connections,
    ...(options.amount ? { amount: options.amount } : { duration: options.durationS ?? RUN_SECONDS }),
    ...(options.overallRate ? { overallRate: options.overallRate } : {}),
    timeout: 10,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => ({ ...request, body: JSON.stringify({ email: uniqueEmail(), name: 'Bench' }) }),
      },
    ],
  });
  const { onResponse } = options;
  if (onResponse)
    instance.on('response', (_client: unknown, status: number, _bytes: number, latencyMs: number) => onResponse(status, latencyMs));
  const result = await instance;
  return summariseLoad(options.run, options.overallRate ?? 'max', result);
}

export function summariseLoad(run: string, targetRate: number | 'max', result: Result): LoadSummary {
  return {
    run,
    targetRate,
    connections: result.connections,
    durationS: round(result.duration, 2),
    requests: result['2xx'],
    rps: round(result['2xx'] / result.duration, 1),
    p50: result.latency.p50,
    p97_5: result.latency.p97_5,
    p99: result.latency.p99,
    max: result.latency.max,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
  };
}

/**
 * Runs `op` from `concurrency` loops for `durationS` seconds (or until `amount`
 * operations), timing each: the no-HTTP counterpart of an autocannon run.
 */
export async function closedLoop(options: {
  run: string;
  concurrency: number;
  durationS?: number;
  op: () => Promise<void>;
}): Promise<LoadSummary> {
  const durationMs = (options.durationS ?? RUN_SECONDS) * 1000;
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        try {
          await options.op();
          latencies.push(performance.now() - t0);
        } catch {
          errors += 1;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    run: options.run,
    targetRate: 'max',
    connections: options.concurrency,
    durationS: round(elapsed, 2),
    requests: latencies.length,
    rps: round(latencies.length / elapsed, 1),
    p50: round(percentile(latencies, 50), 1),
    p97_5: round(percentile(latencies, 97.5), 1),
    p99: round(percentile(latencies, 99), 1),
    max: round(latencies.at(-1) ?? 0, 1),
    errors,
    timeouts: 0,
    non2xx: 0,
  };
}

// ---------------------------------------------------------------- numbers and output

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** A plain text table, columns padded. */
export function table(rows: Array<Record<string, unknown>>): string {
  if (rows.length === 0) return '(no rows)\n';
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const cells = rows.map((row) =>
    columns.map((c) => {
      const value = row[c];
      return value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
    }),
  );
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i])).join(' | ');
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line)].join('\n') + '\n';
}

export interface Machine {
  cores: number;
  memoryGb: number;
  cpu: string;
  node: string;
  redis: string;
  postgres: string;
  loadAvg: number[];
}

export async function machineInfo(): Promise<Machine> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  const info = await redis.info('server');
  redis.disconnect();
  const { rows } = await onMaintenanceDb((client) => client.query<{ server_version: string }>('SHOW server_version'));
  return {
    cores: Number(execFileSync('nproc').toString().trim()),
    memoryGb: round(os.totalmem() / 2 ** 30, 1),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    postgres: rows[0]?.server_version ?? 'unknown',
    loadAvg: os.loadavg().map((l) => round(l, 2)),
  };
}

/** The scenario's output: a human table, then one JSON line (the last line on stdout). */
export function report(scenario: string, machine: Machine, results: Record<string, unknown>, rows: Array<Record<string, unknown>>): void {
  process.stdout.write(`\n## ${scenario}\n\n${table(rows)}\n`);
  process.stdout.write(
    `${JSON.stringify({ scenario, date: new Date().toISOString(), machine: { ...machine, loadAvgAtEnd: os.loadavg().map((l) => round(l, 2)) }, ...results })}\n`,
  );
}
