// What the fault run and the soak start: a private redis-server, a fresh database, the counting SMTP server, and
// errand as two processes (ROLE=api, ROLE=worker) from the built bundle, each restartable on its own port.
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { Redis } from 'ioredis';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  onCleanup,
  progress,
  repoRoot,
  rssMb,
  sleep,
  spawnServer,
  startPrivateRedis,
  type Child,
  type PrivateRedis,
} from '../lib.js';
import { startCountingSmtp, type CountingSmtp } from './smtp.js';

export const WEBHOOK_SECRET = 'faults-webhook-secret-0123456789';

/** A number from the environment, with a default; a bad value stops the script naming the variable. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    process.stderr.write(`${name} must be a non-negative number, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return value;
}

/** Every `<prefix>ERRAND_<NAME>=value` in the environment becomes `<NAME>=value` in errand's environment. */
function errandOverrides(prefix: string): Record<string, string> {
  const overrides: Record<string, string> = {};
  const marker = `${prefix}ERRAND_`;
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith(marker) && value !== undefined) overrides[key.slice(marker.length)] = value;
  }
  return overrides;
}

export type Role = 'api' | 'worker';

export interface ErrandProcess {
  role: Role;
  url: string;
  pid(): number | undefined;
  rssMb(): number | undefined;
  /** SIGKILL, waits for the exit. */
  kill9(): Promise<void>;
  /** Starts it again on the same port, waits for /readyz 200. */
  restart(): Promise<void>;
  /** Start attempts that failed (and were tried again). */
  startFailures(): number;
}

export interface Stack {
  clock: () => number;
  redis: PrivateRedis;
  redisAdmin: Redis;
  databaseUrl: string;
  databaseName: string;
  smtp: CountingSmtp;
  api: ErrandProcess;
  worker: ErrandProcess;
  logDir: string;
  /** A short-lived connection to errand's database (closed after `work`). */
  withDb<T>(work: (client: pg.Client) => Promise<T>): Promise<T>;
}

export interface StackOptions {
  /** Env prefix of the script's knobs: `FAULTS_` or `SOAK_`. */
  prefix: string;
  errandEnv: Record<string, string>;
}

function logStream(dir: string, name: string): WriteStream {
  return createWriteStream(path.join(dir, `${name}.log`), { flags: 'a' });
}

async function startRole(role: Role, env: Record<string, string>, logDir: string): Promise<ErrandProcess> {
  let child: Child | undefined;
  let starts = 0;
  let restartFailures = 0;
  const start = async () => {
    starts += 1;
    // A loaded machine can make a start-up's first PostgreSQL connection time out (errand then exits 1): try again.
    for (let attempt = 1; ; attempt++) {
      try {
        child = await spawnServer('dist/main.js', { ...env, ROLE: role }, { tsx: false, readyTimeoutMs: 60_000 });
        break;
      } catch (error) {
        if (attempt >= 3) throw error;
        progress(`${role} did not start (attempt ${attempt}): ${(error as Error).message.split('\n')[0]}; again`);
        restartFailures += 1;
      }
    }
    const out = logStream(logDir, role);
    out.write(`--- start ${starts} pid ${child.proc.pid} at ${new Date().toISOString()}\n${child.output.join('\n')}\n`);
    child.proc.stdout?.on('data', (chunk: Buffer) => out.write(chunk));
    child.proc.stderr?.on('data', (chunk: Buffer) => out.write(chunk));
    child.proc.once('exit', (code, signal) => {
      out.write(`--- exit code ${code} signal ${signal} at ${new Date().toISOString()}\n`);
      out.end();
    });
  };
  await start();
  const alive = () => child !== undefined && child.proc.exitCode === null && child.proc.signalCode === null;
  return {
    role,
    url: `http://127.0.0.1:${env.PORT}`,
    pid: () => (alive() ? child?.proc.pid : undefined),
    rssMb: () => {
      try {
        return alive() ? rssMb(child!.proc.pid!) : undefined;
      } catch {
        return undefined;
      }
    },
    kill9: async () => {
      const current = child;
      if (!current || !alive()) return;
      const exited = new Promise((resolve) => current.proc.once('exit', resolve));
      current.proc.kill('SIGKILL');
      await exited;
    },
    restart: start,
    startFailures: () => restartFailures,
  };
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const started = performance.now();
  const clock = () => performance.now() - started;
  const logDir = path.join(repoRoot, 'var', options.prefix.toLowerCase().replace(/_$/, ''), new Date().toISOString().replace(/[:.]/g, '-'));
  mkdirSync(logDir, { recursive: true });

  if (process.env[`${options.prefix}SKIP_BUILD`] !== '1') {
    progress('building dist/ (npm run build -- --noCheck)');
    const build = spawnSync(process.execPath, ['scripts/build.mjs', '--noCheck'], { cwd: repoRoot, stdio: 'inherit' });
    if (build.status !== 0) throw new Error('build failed');
  }

  const redis = await startPrivateRedis();
  progress(`private redis-server on :${redis.port}`);
  const redisAdmin = new Redis(redis.url, { maxRetriesPerRequest: 1, commandTimeout: 2000, retryStrategy: () => 100 });
  redisAdmin.on('error', () => {});
  onCleanup('close redis admin connection', () => redisAdmin.disconnect());

  const databaseUrl = freshDatabaseUrl();
  const databaseName = new URL(databaseUrl).pathname.slice(1);
  const smtp = await startCountingSmtp(clock);
  progress(`SMTP server on :${smtp.port}, database ${databaseName}, logs in ${path.relative(repoRoot, logDir)}/`);

  const base = errandEnv({
    DATABASE_URL: databaseUrl,
    REDIS_URL: redis.url,
    QUEUE_PREFIX: 'errand',
    SMTP_URL: smtp.url,
    PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_MAX: '1000000000',
    ...options.errandEnv,
    ...errandOverrides(options.prefix),
  });
  // The api first: its start-up creates the database and runs the migrations, the worker's then finds them done.
  const api = await startRole('api', { ...base, PORT: String(await freePort()) }, logDir);
  const worker = await startRole('worker', { ...base, PORT: String(await freePort()) }, logDir);
  progress(`errand api pid ${api.pid()} (${api.url}), worker pid ${worker.pid()}`);

  const withDb = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000, statement_timeout: 10_000 });
    client.on('error', () => {});
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end().catch(() => {});
    }
  };
  return { clock, redis, redisAdmin, databaseUrl, databaseName, smtp, api, worker, logDir, withDb };
}

export interface Sample {
  /** s on the run clock. */
  t: number;
  apiRssMb: number | undefined;
  workerRssMb: number | undefined;
  redisUsedMemoryMb: number | undefined;
  outboxRows: number | undefined;
  outboxUnpublished: number | undefined;
  emailsAccepted: number;
  /** Promised (2xx) emails not yet accepted by SMTP; filled in by the script, which knows the promises. */
  emailBacklog?: number;
}

/** One sample of the resources a soak watches; a part that cannot be read (a fault) is left undefined. */
export async function sample(stack: Stack): Promise<Sample> {
  const [redisMemory, outbox] = await Promise.all([
    stack.redisAdmin
      .info('memory')
      .then((info) => Number(/used_memory:(\d+)/.exec(info)?.[1]) / 2 ** 20)
      .catch(() => undefined),
    stack
      .withDb((client) =>
        client.query<{ rows: string; unpublished: string }>(
          'select count(*) as rows, count(*) filter (where published_at is null) as unpublished from outbox',
        ),
      )
      .then((result) => result.rows[0])
      .catch(() => undefined),
  ]);
  const round1 = (value: number | undefined) => (value === undefined ? undefined : Math.round(value * 10) / 10);
  return {
    t: Math.round(stack.clock() / 100) / 10,
    apiRssMb: round1(stack.api.rssMb()),
    workerRssMb: round1(stack.worker.rssMb()),
    redisUsedMemoryMb: round1(redisMemory),
    outboxRows: outbox ? Number(outbox.rows) : undefined,
    outboxUnpublished: outbox ? Number(outbox.unpublished) : undefined,
    emailsAccepted: stack.smtp.accepted(),
  };
}

/** Samples every `intervalMs` until the returned stop function is called. */
export function startSampler(stack: Stack, intervalMs: number, onSample: (s: Sample) => void): () => Promise<void> {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const next = stack.clock() + intervalMs;
      onSample(await sample(stack));
      while (!stopped && stack.clock() < next) await sleep(Math.min(200, next - stack.clock()));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}
