import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { Redis } from 'ioredis';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { loadConfig, type Config } from '../../src/config.js';
import { startErrand, type Errand } from '../../src/errand.js';

type Teardown = (fn: () => unknown) => void;
interface T {
  teardown: Teardown;
}

export const BASE_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

/** A fresh database URL; the database itself is created by errand's start-up and dropped at teardown. */
export function freshDatabaseUrl(t: T): string {
  const name = uniqueName('errand_test');
  t.teardown(async () => {
    const client = new pg.Client({ connectionString: `${BASE_DATABASE_URL}/postgres` });
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`);
    await client.end();
  });
  return `${BASE_DATABASE_URL}/${name}`;
}

/** A unique BullMQ prefix; its keys are deleted at teardown. */
export function freshQueuePrefix(t: T): string {
  const prefix = uniqueName('t');
  t.teardown(() => deleteRedisKeys(REDIS_URL, `${prefix}:*`));
  return prefix;
}

async function deleteRedisKeys(url: string, pattern: string): Promise<void> {
  const redis = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export interface ReceivedEmail {
  to: string[];
  subject: string;
  text: string;
  html: string;
}

/** What the test SMTP server answers for one message: undefined accepts, otherwise an SMTP error. */
export type SmtpResponder = (to: string[]) => { code: number; message: string } | undefined;

export interface TestSmtp {
  url: string;
  received: ReceivedEmail[];
  /** Messages attempted (accepted or refused). */
  attempts: number;
  respondWith(responder: SmtpResponder | undefined): void;
  /** Holds each message this long before answering (a slow server). */
  delayReplies(ms: number): void;
  /** Messages whose data has arrived but which are not answered yet. */
  readonly inFlight: number;
  waitForEmails(count: number, timeoutMs?: number): Promise<ReceivedEmail[]>;
}

/** A real SMTP server on a free port, accepting every message unless told otherwise. */
export async function startSmtpServer(t: T): Promise<TestSmtp> {
  let responder: SmtpResponder | undefined;
  const received: ReceivedEmail[] = [];
  const state = { attempts: 0, delayMs: 0, inFlight: 0 };
  const server = new SMTPServer({
    authOptional: true,
    // Its bundled certificate has expired: no STARTTLS.
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', async () => {
        state.attempts += 1;
        state.inFlight += 1;
        if (state.delayMs > 0) await sleep(state.delayMs);
        state.inFlight -= 1;
        const to = (session.envelope.rcptTo as SMTPServerAddress[]).map((a) => a.address);
        const refusal = responder?.(to);
        if (refusal) {
          const error = Object.assign(new Error(refusal.message), { responseCode: refusal.code });
          return callback(error);
        }
        const parsed = await simpleParser(Buffer.concat(chunks));
        received.push({ to, subject: parsed.subject ?? '', text: parsed.text ?? '', html: typeof parsed.html === 'string' ? parsed.html : '' });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  // A killed client may leave a socket behind; don't let it hold the test open.
  server.server.unref();
  const { port } = server.server.address() as { port: number };
  return {
    url: `smtp://127.0.0.1:${port}`,
    received,
    get attempts() {
      return state.attempts;
    },
    respondWith(next) {
      responder = next;
    },
    delayReplies(ms) {
      state.delayMs = ms;
    },
    get inFlight() {
      return state.inFlight;
    },
    waitForEmails: (count, timeoutMs = 15000) => waitFor(() => (received.length >= count ? received.slice() : undefined), timeoutMs, `${count} email(s)`),
  };
}

export async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Collects pino's JSON lines in memory. */
export function captureLogs(): { stream: Writable; lines: () => Record<string, unknown>[]; raw: string[] } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line) raw.push(line);
      callback();
    },
  });
  return { stream, raw, lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

/** Environment for a test process: its own database and prefix, quick timings. */
export function testEnv(t: T, overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    NODE_ENV: 'test',
    DATABASE_URL: freshDatabaseUrl(t),
    REDIS_URL,
    QUEUE_PREFIX: freshQueuePrefix(t),
    LOG_LEVEL: 'debug',
    PUBLIC_BASE_URL: 'http://errand.test',
    JOB_BACKOFF_MS: '50',
    EMAIL_RATE_DURATION_MS: '10',
    OUTBOX_RELAY_INTERVAL_MS: '100',
    OUTBOX_RELAY_GRACE_MS: '0',
    SHUTDOWN_GRACE_MS: '5000',
    ...overrides,
  };
}

export interface TestErrand extends Errand {
  config: Config;
  logs: ReturnType<typeof captureLogs>;
}

/** errand in this process with captured logs, closed at teardown. */
export async function startTestErrand(t: T, env: Record<string, string | undefined>): Promise<TestErrand> {
  const config = loadConfig(env);
  const logs = captureLogs();
  const errand = await startErrand(config, { logDestination: logs.stream });
  t.teardown(() => errand.close());
  return { ...errand, config, logs };
}

/** The verification link inside an email's text part. */
export function extractLink(text: string, path: string): string {
  const match = new RegExp(`https?://\\S+${path.replace(/[/?]/g, '\\$&')}\\S*`).exec(text);
  if (!match) throw new Error(`no ${path} link in email`);
  return match[0];
}

/** A free TCP port on 127.0.0.1 (for servers we start as child processes). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface PrivateRedis {
  url: string;
  start(): Promise<void>;
  /** SIGKILL, like a crash: nothing is flushed. */
  kill(): Promise<void>;
}

/** A redis-server owned by one test, on its own port, so the test may kill it. Never the shared one. */
export async function startPrivateRedis(t: T): Promise<PrivateRedis> {
  const { spawn } = await import('node:child_process');
  const port = await freePort();
  let child: import('node:child_process').ChildProcess | undefined;
  const redis: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      await waitFor(async () => {
        const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
        try {
          await probe.connect();
          return (await probe.ping()) === 'PONG' || undefined;
        } catch {
          return undefined;
        } finally {
          probe.disconnect();
        }
      }, 10000, `redis-server on port ${port}`);
    },
    async kill() {
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
  };
  await redis.start();
  t.teardown(() => redis.kill());
  return redis;
}

export interface ChildErrand {
  child: import('node:child_process').ChildProcess;
  baseUrl: string;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** `node --import tsx src/main.ts` as a real child process (one process: signals reach errand itself). */
export async function spawnErrand(t: T, env: Record<string, string | undefined>, options: { waitReady?: boolean; killAtTeardown?: boolean } = {}): Promise<ChildErrand> {
  const { spawn } = await import('node:child_process');
  const port = env.PORT ?? String(await freePort());
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const lines = text.split('\n');
    partial = lines.pop()!;
    stdout.push(...lines.filter(Boolean));
  });
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(...chunk.toString().split('\n').filter(Boolean)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  if (options.killAtTeardown !== false) {
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    });
  }
  const handle: ChildErrand = {
    child,
    baseUrl: `http://127.0.0.1:${port}`,
    stdout,
    stderr,
    exited,
    waitForLog: (predicate, timeoutMs = 15000) =>
      waitFor(() => stdout.map((line) => { try { return JSON.parse(line) as Record<string, unknown>; } catch { return undefined; } }).find((l) => l && predicate(l)), timeoutMs, 'log line'),
  };
  if (options.waitReady !== false) {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`errand exited early: ${stderr.join('\n')}`);
      try {
        return (await fetch(`${handle.baseUrl}/readyz`)).status === 200 || undefined;
      } catch {
        return undefined;
      }
    }, 30000, 'errand /readyz');
  }
  return handle;
}
