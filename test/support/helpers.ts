import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { connect, createServer, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import pg from 'pg';
import rootTap from 'tap';
import { Kysely, PostgresDialect } from 'kysely';
import type { Database } from '../../src/db/schema.js';
import type { DataLayer } from '../../src/db/pool.js';
import { createPreparedStatements } from '../../src/db/prepared.js';
import { Redis } from 'ioredis';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { TEST_BUILD_DIR, TEST_BUNDLE_DIR, TEST_MAIN_DIR, srcFiles, transpileSrcSync } from '../../scripts/transpile-src.mjs';
import { loadConfig, type Config } from '../../src/config.js';
import { startErrand, type Errand } from '../../src/errand.js';
import { directoryHolding } from '../../src/core/package-root.js';
import type { Deps } from '../../src/deps.js';
import { isQueueName } from '../../src/queues.js';
// Fails a file whose process outlives its tests, naming what holds it (instead of running to the 180 s limit).
import './exit-watchdog.js';

type Teardown = (fn: () => unknown) => void;
export interface T {
  teardown: Teardown;
}

/** This module's file: test/support/helpers.ts, or compiled by `npm test` into .test-build/ or bundled into .test-bundle/. */
const THIS_FILE = fileURLToPath(import.meta.url);

/** The checkout: the nearest directory above this code that holds tsconfig.json (.test-build/ links package.json, not it). */
export const REPO_ROOT = directoryHolding('tsconfig.json', path.dirname(THIS_FILE));

/**
 * How this code runs: bundled by `npm test` (which also bundles errand and the scripts into .test-main/ for the
 * tests to spawn), transpiled into .test-build/ (`npm run test:coverage`, with the scripts beside it), or as
 * TypeScript through tsx (a file run by hand).
 */
const RUNNING_FROM: 'bundle' | 'build' | 'source' = THIS_FILE.includes(`${path.sep}${TEST_BUNDLE_DIR}${path.sep}`)
  ? 'bundle'
  : THIS_FILE.endsWith('.ts')
    ? 'source'
    : 'build';

export const BASE_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

/** A SQL statement run synchronously against the `postgres` database; throws with psql's stderr. */
function psqlSync(statement: string): void {
  // Synchronous: the bound is execFileSync's own (a CREATE DATABASE waiting on a lock would otherwise hold the file).
  const timeoutMs = 60000;
  try {
    execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', `${BASE_DATABASE_URL}/postgres`, '-c', statement], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: timeoutMs,
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ETIMEDOUT')
      throw new Error(`timed out after ${duration(timeoutMs)} waiting for psql: ${statement}`, { cause: error });
    const stderr = String((error as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(stderr || (error as Error).message, { cause: error });
  }
}

const quoteIdentifier = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * The name of the migrated template for the current migrations/ (names and contents): a changed or added
 * migration gives a new name, so a stale template is never cloned. Computed once per test process.
 */
export const templateDatabaseName: () => string = (() => {
  let name: string | undefined;
  return () => {
    if (name) return name;
    const dir = path.join(REPO_ROOT, 'migrations');
    const hash = createHash('sha256');
    for (const file of readdirSync(dir)
      .filter((f) => f.endsWith('.sql'))
      .sort())
      hash.update(`${file}\0${readFileSync(path.join(dir, file))}\0`);
    return (name = `errand_template_${hash.digest('hex').slice(0, 16)}`);
  };
})();

/**
 * Builds the template under a private name with the real `npm run migrate` (so Kysely's migration table is
 * filled and errand's start-up finds nothing to do), then renames it into place. The rename is atomic: a
 * database under the template's name is always complete, and of two files building at once the loser's
 * rename fails and it drops its copy. Templates are left behind for the next run (one per migration set).
 */
function buildTemplateDatabase(template: string): void {
  const building = uniqueName('errand_template_building');
  psqlSync(`CREATE DATABASE ${quoteIdentifier(building)}`);
  try {
    execFileSync(process.execPath, scriptArgs('migrate.ts'), {
      cwd: REPO_ROOT,
      env: childEnv({ DATABASE_URL: `${BASE_DATABASE_URL}/${building}`, REDIS_URL, NODE_ENV: 'test' }),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    psqlSync(`ALTER DATABASE ${quoteIdentifier(building)} RENAME TO ${quoteIdentifier(template)}`);
  } catch (error) {
    psqlSync(`DROP DATABASE IF EXISTS ${quoteIdentifier(building)} WITH (FORCE)`);
    // Another test file finished first: its template is as good as ours.
    if (!/already exists/.test((error as Error).message)) throw error;
  }
}

/**
 * A fresh database URL: a clone of the migrated template, or one that a finished test of this process emptied
 * (emptyDatabases). Unless `create: false`, for tests of errand creating and migrating its own database: that one
 * is dropped at teardown. Synchronous so `testEnv` stays synchronous.
 */
export function freshDatabaseUrl(t: T, options: { create?: boolean } = {}): string {
  if (options.create === false) {
    const name = uniqueName('errand_test');
    t.teardown(() => dropDatabase(name));
    return `${BASE_DATABASE_URL}/${name}`;
  }
  const name = emptiedDatabases.pop() ?? cloneTemplateDatabase(uniqueName('errand_test'));
  // Teardowns run last-registered first: by now the test's errands, spawned processes and clients have closed.
  t.teardown(async () => {
    await emptyDatabase(name);
    emptiedDatabases.push(name);
  });
  return `${BASE_DATABASE_URL}/${name}`;
}

/**
 * Databases that tests of this process have finished with, emptied, for the next freshDatabaseUrl: emptying one
 * costs ~40 ms of machine CPU, a clone ~0.3 s (psql, CREATE DATABASE, and DROP DATABASE at its end). Dropped when
 * the process's last test ends.
 */
const emptiedDatabases: string[] = [];
rootTap.teardown(async () => {
  for (const emptied of emptiedDatabases.splice(0)) await dropDatabase(emptied);
});

async function dropDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: `${BASE_DATABASE_URL}/postgres` });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

/**
 * Back to the template's state: every row of errand's tables deleted and every sequence restarted, in one
 * transaction, after ending any session still connected (as DROP … WITH (FORCE) did). Kysely's migration tables
 * keep their rows. No test changes the schema (a test that did would need a database of its own, create: false).
 */
async function emptyDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: `${BASE_DATABASE_URL}/${name}` });
  await client.connect();
  try {
    await client.query(
      'SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
    );
    const { rows } = await client.query<{ tables: string[]; sequences: string[] }>(
      `SELECT
         ARRAY(SELECT format('%I', tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'kysely\\_%') AS tables,
         ARRAY(SELECT format('%L, %s', sequencename, start_value) FROM pg_sequences WHERE schemaname = 'public') AS sequences`,
    );
    const [{ tables, sequences }] = rows;
    // Foreign keys are triggers: off for this transaction, so the tables empty in any order.
    const statements = [
      'BEGIN',
      'SET LOCAL session_replication_role = replica',
      ...tables.map((table) => `DELETE FROM ${table}`),
      ...sequences.map((sequence) => `SELECT setval(${sequence}, false)`),
      'COMMIT',
    ];
    await client.query(statements.join(';\n'));
  } finally {
    await client.end();
  }
}

function cloneTemplateDatabase(name: string): string {
  const template = templateDatabaseName();
  const clone = () => psqlSync(`CREATE DATABASE ${quoteIdentifier(name)} TEMPLATE ${quoteIdentifier(template)}`);
  try {
    clone();
  } catch (error) {
    if (!/does not exist/.test((error as Error).message)) throw error;
    buildTemplateDatabase(template);
    clone();
  }
  return name;
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
  /**
   * Answers the first `count` messages as usual and holds every later one until the returned release() is called:
   * emails stay in flight for as long as a test needs (a failover test kills Redis under them), whatever the load.
   */
  holdRepliesAfter(count: number): () => void;
  /** Messages whose data has arrived but which are not answered yet. */
  readonly inFlight: number;
  /** The most messages ever in flight at once. */
  readonly maxInFlight: number;
  waitForEmails(count: number, timeoutMs?: number): Promise<ReceivedEmail[]>;
}

/** A real SMTP server on a free port, accepting every message unless told otherwise. */
export async function startSmtpServer(t: T): Promise<TestSmtp> {
  let responder: SmtpResponder | undefined;
  const received: ReceivedEmail[] = [];
  const state = { attempts: 0, delayMs: 0, inFlight: 0, maxInFlight: 0 };
  let hold: { after: number; released: Promise<void> } | undefined;
  const server = new SMTPServer({
    authOptional: true,
    // Its bundled certificate has expired: no STARTTLS.
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    // At teardown, connections errand's mail pool still holds are dropped after 1 s (smtp-server's default waits 30 s).
    closeTimeout: 1000,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      // An async handler whose promise no one awaits: every path ends in callback().
      stream.on(
        'end',
        () =>
          void (async () => {
            state.attempts += 1;
            const attempt = state.attempts;
            state.inFlight += 1;
            state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
            // Unref'd: a reply held for a process the test already killed must not keep the test file alive
            // (process.test.ts holds one for 60 s: a minute of idle wait per run).
            if (state.delayMs > 0) await delay(state.delayMs, undefined, { ref: false });
            if (hold && attempt > hold.after) await hold.released;
            state.inFlight -= 1;
            const to = session.envelope.rcptTo.map((a) => a.address);
            const refusal = responder?.(to);
            if (refusal) {
              const error = Object.assign(new Error(refusal.message), { responseCode: refusal.code });
              return callback(error);
            }
            const parsed = await simpleParser(Buffer.concat(chunks));
            received.push({
              to,
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
              html: typeof parsed.html === 'string' ? parsed.html : '',
            });
            callback();
          })(),
      );
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  // A killed client may leave a socket behind; don't let it hold the test open.
  server.server.unref();
  // errand pools its SMTP connections, so a worker killed with -9 resets an open one: expected here, not a test failure.
  server.on('error', () => {});
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
    holdRepliesAfter(count) {
      let release = () => {};
      hold = { after: count, released: new Promise<void>((resolve) => (release = resolve)) };
      return () => {
        hold = undefined;
        release();
      };
    },
    get inFlight() {
      return state.inFlight;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    waitForEmails: (count, timeoutMs = 15000) =>
      waitFor(() => (received.length >= count ? received.slice() : undefined), timeoutMs, `${count} email(s)`),
  };
}

/** `ms` as a person reads it in a timeout message: "800 ms", "20 s". */
function duration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * Settles as `work` does, or rejects once `ms` have passed with "timed out after <ms> waiting for <what>": a
 * wait on something that may never answer (a promise of a library, a teardown) fails in seconds, saying what it
 * waited for, instead of holding its test file until the runner's per-file timeout.
 */
export async function within<R>(work: Promise<R> | (() => Promise<R>), ms: number, what: string): Promise<R> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${duration(ms)} waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([typeof work === 'function' ? work() : work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `probe` until it returns something other than undefined or false, for at most `timeoutMs` in all: a probe
 * that does not answer by then (a request or a Redis command that hangs) counts against the same deadline, so
 * waitFor always ends within about `timeoutMs`, with "timed out after <timeoutMs> waiting for <what>". A probe that
 * fails with ioredis' "Command timed out" has not answered either and is polled again; any other error ends the wait.
 * `explain`, when the wait can stop for several reasons, adds what it finds then (where the work stopped) to the
 * timeout's message; should it fail itself (a starved process), the message says so instead.
 */
export async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what: string,
  options: { explain?: () => string | Promise<string> } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = async (detail = '') => {
    const explanation = options.explain
      ? `: ${await Promise.resolve()
          .then(options.explain)
          .catch((error: unknown) => `(no explanation: ${(error as Error).message})`)}`
      : '';
    return new Error(`timed out after ${duration(timeoutMs)} waiting for ${what}${detail}${explanation}`);
  };
  const late = Symbol('late');
  const unanswered = Symbol('unanswered');
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const value = await Promise.race([
      // A Redis command past its commandTimeout (a starved test process: two suites at once) is a check that did
      // not answer, as above: poll again. Any other error ends the wait.
      (async () => probe())().catch((error: unknown): typeof unanswered => {
        if ((error as Error | undefined)?.message === 'Command timed out') return unanswered;
        throw error;
      }),
      new Promise<typeof late>((resolve) => (timer = setTimeout(resolve, Math.max(deadline - Date.now(), 1), late))),
    ]).finally(() => clearTimeout(timer));
    if (value === late) throw await timedOut(' (its last check had not answered by then)');
    if (value !== unanswered && value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) throw await timedOut(value === unanswered ? ' (its last check: a Redis command timed out)' : '');
    await sleep(25);
  }
}

/** Nanoseconds this process's main thread has waited for a CPU while runnable (Linux's run-queue delay), or 0. */
function runQueueWaitNs(): number {
  try {
    return Number(readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]);
  } catch {
    return 0;
  }
}

/**
 * How long `work` took, in ms, less the time this process's main thread spent runnable but waiting for a CPU
 * (/proc/self/schedstat): on a loaded machine that wait belongs to the machine, not to the code under test, while
 * every wait of the code itself (PostgreSQL, Redis, timers) still counts. For latency bounds of the contract
 * ("within a second"); on an idle machine the two times are the same.
 */
export async function timeOwnWork<R>(work: () => Promise<R>): Promise<{ result: R; ms: number; cpuWaitMs: number }> {
  const startedWait = runQueueWaitNs();
  const started = performance.now();
  const result = await work();
  const wallMs = performance.now() - started;
  const cpuWaitMs = Math.max(0, (runQueueWaitNs() - startedWait) / 1e6);
  return { result, ms: wallMs - cpuWaitMs, cpuWaitMs };
}

/** A plain delay (node:timers/promises); prefer waitFor on state, and say why when a delay is really needed. */
export function sleep(ms: number): Promise<void> {
  return delay(ms);
}

/**
 * Waits until every outbox row (or each of `ids`) is published and every job it became has finished (completed or failed):
 * from then on nothing more is on its way from the outbox, so "exactly N emails" can be counted.
 */
export async function waitForOutboxDrained(
  deps: Pick<Deps, 'db' | 'queues'>,
  options: { timeoutMs?: number; ids?: string[] } = {},
): Promise<void> {
  const { timeoutMs = 15000, ids } = options;
  await waitFor(
    async () => {
      let query = deps.db.selectFrom('outbox').select(['id', 'queue', 'published_at']);
      if (ids) query = query.where('id', 'in', ids.length ? ids : ['0']);
      const rows = await query.execute();
      for (const row of rows) {
        if (!row.published_at || !isQueueName(row.queue)) return undefined;
        const state = await deps.queues[row.queue].getJobState(`outbox-${row.id}`);
        if (state !== 'completed' && state !== 'failed') return undefined;
      }
      return true;
    },
    timeoutMs,
    'every outbox row published and its job finished',
  );
}

/** Collects pino's JSON lines in memory. */
export function captureLogs(): { stream: Writable; lines: () => Record<string, unknown>[]; raw: string[] } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line) raw.push(line);
      // TEST_ERRAND_LOG_FILE=/tmp/x.log: every in-process errand's log lines also go there (to read a failure's why).
      if (process.env.TEST_ERRAND_LOG_FILE) appendFileSync(process.env.TEST_ERRAND_LOG_FILE, String(chunk));
      callback();
    },
  });
  return { stream, raw, lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

/** Environment for a test process: its own database and prefix, quick timings. */
export function testEnv(t: T, overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    NODE_ENV: 'test',
    // An overridden DATABASE_URL costs no clone.
    DATABASE_URL: 'DATABASE_URL' in overrides ? overrides.DATABASE_URL : freshDatabaseUrl(t),
    REDIS_URL,
    QUEUE_PREFIX: freshQueuePrefix(t),
    LOG_LEVEL: 'debug',
    PUBLIC_BASE_URL: 'http://errand.test',
    JOB_BACKOFF_MS: '50',
    EMAIL_RATE_DURATION_MS: '10',
    OUTBOX_RELAY_INTERVAL_MS: '100',
    OUTBOX_RELAY_GRACE_MS: '0',
    SHUTDOWN_GRACE_MS: '5000',
    // Tests send many requests from one address; the rate-limit tests set their own.
    RATE_LIMIT_MAX: '100000',
    // Outage pauses start small in tests (the default is 5 s).
    EMAIL_OUTAGE_PAUSE_MS: '100',
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
  const errand = await within(startErrand(config, { logDestination: logs.stream }), 60000, 'errand to start (startErrand)');
  // close() is bounded in itself (workers get SHUTDOWN_GRACE_MS); should a part of it never settle, say so here
  // rather than leave the file to the runner's per-file timeout.
  t.teardown(() =>
    within(errand.close(), 30000, 'errand.close() at teardown').catch((error: unknown) => {
      // Which step of close() it hung in (errand logs each at debug): seen once after a whole-cluster outage.
      const last = logs.lines().findLast((line) => line.msg === 'closing');
      const step = last ? `still closing: ${String(last.step)}` : 'no closing step logged at this LOG_LEVEL';
      throw new Error(`${(error as Error).message} (${step})`, { cause: error });
    }),
  );
  return { ...errand, config, logs };
}

/** The verification link inside an email's text part. */
export function extractLink(text: string, path: string): string {
  const match = new RegExp(`https?://\\S+${path.replace(/[/?]/g, '\\$&')}\\S*`).exec(text);
  if (!match) throw new Error(`no ${path} link in email`);
  return match[0];
}

/** A free TCP port on 127.0.0.1 (for servers we start as child processes). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * A free port below Linux's ephemeral range (32768-60999) and the Redis topologies' ports (10000-32000, see
 * freePortsWithBus), for a server a test stops and starts again on the same port: a port in the ephemeral range
 * (freePort's) may meanwhile be handed to another process's outgoing connection (two suites at once: seen), and
 * redis-server then cannot bind it again.
 */
export async function freePortBelowEphemeral(): Promise<number> {
  for (;;) {
    const port = 7000 + Math.floor(Math.random() * 3000);
    if (await portIsFree(port)) return port;
  }
}

/** True when nothing listens on `port` of 127.0.0.1 now (a server may take it a moment later). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export interface TcpProxy {
  port: number;
  /** Refuses new connections and resets open ones: the server behind it looks down. */
  cut(): Promise<void>;
  /** Accepts connections again, on the same port: the server behind it is back. */
  restore(): Promise<void>;
}

/**
 * A TCP proxy on a free port in front of `target` (e.g. the shared PostgreSQL), so one test can make a shared
 * server unreachable for its own process without touching the server.
 */
export async function startTcpProxy(t: T, target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  // Below the ephemeral range, as for a private Redis: restore() binds this port again after a cut.
  const port = await freePortBelowEphemeral();
  const listen = () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  await listen();
  const cut = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.resetAndDestroy();
    await closed;
  };
  t.teardown(() => (server.listening ? cut() : undefined));
  return { port, cut, restore: listen };
}

export interface PrivateRedis {
  url: string;
  start(): Promise<void>;
  /** SIGKILL, like a crash: nothing is flushed. */
  kill(): Promise<void>;
}

/** A redis-server owned by one test, on its own port, so the test may kill it. Never the shared one. */
export async function startPrivateRedis(t: T): Promise<PrivateRedis> {
  const port = await freePortBelowEphemeral();
  let child: ChildProcess | undefined;
  const redis: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdio: 'ignore',
      });
      const started = child;
      await waitFor(
        async () => {
          // One that could not bind its port exits at once: say so instead of waiting out the deadline.
          if (started.exitCode !== null) throw new Error(`redis-server on port ${port} exited (${started.exitCode})`);
          const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
          try {
            await probe.connect();
            return (await probe.ping()) === 'PONG' || undefined;
          } catch {
            return undefined;
          } finally {
            probe.disconnect();
          }
        },
        10000,
        `redis-server on port ${port}`,
      );
    },
    async kill() {
      // Already exited: by itself (exitCode) or killed (signalCode; exitCode stays null), when no 'exit' will come again.
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
  };
  await redis.start();
  t.teardown(() => redis.kill());
  return redis;
}

/** A child's environment: exactly `env`, plus PATH and HOME so node and npm work. */
export function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ChildErrand {
  child: ChildProcess;
  port: number;
  baseUrl: string;
  /** Non-empty stdout lines so far. */
  stdout: string[];
  /** Non-empty stderr lines so far. */
  stderr: string[];
  exited: Promise<Exit>;
  /** stdout lines that are JSON (pino's log lines). */
  logLines(): Record<string, unknown>[];
  /** SIGTERM if still running; resolves when it has exited. */
  stop(): Promise<Exit>;
}

/**
 * errand's entry point for spawned errands: under `npm test`, the bundle it built into .test-main/; otherwise src/
 * transpiled file for file by esbuild into `<repo>/.test-dist-<hash of src/>`: built once per state
 * of src/ and shared by every file of a run, so a spawned errand runs plain JavaScript as production does and
 * starts without tsx's loader (about 1.3 s less CPU per process). One level below the repository root, like
 * dist/, so migrations/ and package.json are found as from dist/. Built under a private name and renamed into
 * place: of two files building at once, the loser drops its copy. Old builds are left (git-ignored).
 */
export const builtMainScript: () => string = (() => {
  let main: string | undefined;
  return () => {
    if (main) return main;
    if (RUNNING_FROM === 'bundle') return (main = path.join(REPO_ROOT, TEST_MAIN_DIR, 'src', 'main.js'));
    const srcDir = path.join(REPO_ROOT, 'src');
    const sources = srcFiles(REPO_ROOT);
    const hash = createHash('sha256');
    for (const file of sources) hash.update(`${file}\0${readFileSync(path.join(srcDir, file))}\0`);
    const outdir = path.join(REPO_ROOT, `.test-dist-${hash.digest('hex').slice(0, 16)}`);
    main = path.join(outdir, 'main.js');
    if (existsSync(main)) return main;
    const building = path.join(REPO_ROOT, `.test-dist-building-${randomBytes(4).toString('hex')}`);
    transpileSrcSync(REPO_ROOT, building);
    try {
      renameSync(building, outdir);
    } catch (error) {
      rmSync(building, { recursive: true, force: true });
      // Another test file finished first: its build is as good as ours.
      if (!existsSync(main)) throw error;
    }
    return main;
  };
})();

export interface SpawnOptions {
  /** Default: this node, running src/ as built by builtMainScript() (one process: signals reach errand itself). */
  command?: string;
  args?: string[];
  /** Default: the repository root. */
  cwd?: string;
  /** Wait until /readyz answers 200 (default true). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  /** SIGKILL it at teardown if still running (default true). */
  killAtTeardown?: boolean;
}

/**
 * errand as a real child process with exactly `env`. Resolves once its port is known — PORT, or a free port
 * when PORT is unset, or with PORT=0 the one its "Server listening" log line names — and, unless
 * `waitReady: false`, once /readyz answers 200.
 */
export async function spawnErrand(t: T, env: Record<string, string | undefined>, options: SpawnOptions = {}): Promise<ChildErrand> {
  const {
    command = process.execPath,
    args = [builtMainScript()],
    cwd = REPO_ROOT,
    waitReady = true,
    readyTimeoutMs = 30000,
    killAtTeardown = true,
  } = options;
  const fixedPort = env.PORT ?? String(await freePort());
  const child = spawn(command, args, { cwd, env: childEnv({ ...env, PORT: fixedPort }), stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  let listening: ((port: number) => void) | undefined;
  const listeningPort = new Promise<number>((resolve) => (listening = resolve));
  let partial = '';
  child.stdout.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines.filter(Boolean)) {
      stdout.push(line);
      const match = /Server listening at http:\/\/[^"]*:(\d+)/.exec(line);
      if (match) listening?.(Number(match[1]));
    }
  });
  child.stderr.on('data', (chunk: Buffer) => stderr.push(...chunk.toString().split('\n').filter(Boolean)));
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  if (killAtTeardown) {
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    });
  }
  const tail = () => `stderr: ${stderr.slice(-5).join(' | ')}; stdout: ${stdout.slice(-3).join(' | ')}`;
  const port =
    fixedPort !== '0'
      ? Number(fixedPort)
      : await Promise.race([
          listeningPort,
          exited.then(({ code, signal }) => Promise.reject(new Error(`errand exited (${code ?? signal}) before listening; ${tail()}`))),
        ]);
  const handle: ChildErrand = {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    stdout,
    stderr,
    exited,
    logLines: () =>
      stdout.flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  if (waitReady) {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error('errand exited early');
        try {
          const res = await fetch(`${handle.baseUrl}/readyz`);
          await res.body?.cancel();
          return res.status === 200 || undefined;
        } catch {
          return undefined;
        }
      },
      readyTimeoutMs,
      'errand /readyz',
    ).catch((error: Error) => {
      throw new Error(`${error.message}; ${tail()}`);
    });
  }
  return handle;
}

export interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** tsx by absolute URL: a child started in a directory of its own cannot resolve it from there. */
const TSX_IMPORT = pathToFileURL(path.join(REPO_ROOT, 'node_modules/tsx/dist/loader.mjs')).href;

/**
 * node's arguments to run `scripts/<script>` (e.g. `sweep.ts`) from any directory: compiled JavaScript under
 * `npm test` (bundled) or `npm run test:coverage` (transpiled); the TypeScript through tsx otherwise.
 */
export function scriptArgs(script: string): string[] {
  const compiled = script.replace(/\.ts$/, '.js');
  if (RUNNING_FROM === 'bundle') return [path.join(REPO_ROOT, TEST_MAIN_DIR, 'scripts', compiled)];
  if (RUNNING_FROM === 'build') return [path.join(REPO_ROOT, TEST_BUILD_DIR, 'scripts', compiled)];
  return ['--import', TSX_IMPORT, path.join(REPO_ROOT, 'scripts', script)];
}

/** Runs a script under scripts/ to its end, as its own process with exactly `env`; SIGKILLed after `timeoutMs`. */
export function runScript(
  script: string,
  args: string[],
  env: Record<string, string | undefined>,
  timeoutMs = 60000,
): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...scriptArgs(script), ...args], {
      cwd: REPO_ROOT,
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`scripts/${script} ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A Kysely of its own on `url` that counts the statements it sends whose SQL matches `counted` (`counter.matches`). */
export function countingDb(t: T, url: string, counted: RegExp): { db: Kysely<Database>; data: DataLayer; counter: { matches: number } } {
  const counter = { matches: 0 };
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 3000 });
  // The database is dropped WITH (FORCE) at teardown, which may come before this pool's end: an idle client then
  // gets 57P01, and an unhandled pool error would fail the file (as in createDb, the next query reports errors).
  pool.on('error', () => {});
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    log(event) {
      if (counted.test(event.query.sql)) counter.matches += 1;
    },
  });
  // Prepared statements (src/db/prepared.ts) go through pool.query, not Kysely: counted there.
  const query = pool.query.bind(pool) as (config: { text: string }) => Promise<unknown>;
  (pool as unknown as { query: typeof query }).query = (config) => {
    if (counted.test(config.text)) counter.matches += 1;
    return query(config);
  };
  t.teardown(() => db.destroy());
  const data: DataLayer = { db, pool, prepared: createPreparedStatements(pool, db), batching: true, destroy: () => db.destroy() };
  return { db, data, counter };
}
