import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { packageRoot } from './package-root.js';
import { createBatcher, type BatcherOptions } from '../db/batcher.js';
import { databaseBusyError, isLockConflict } from './errors.js';
import type { TraceContext } from './tracing.js';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  sql,
  type ColumnType,
  type Compilable,
  type CompiledQuery,
  type Generated,
  type Migration,
  type MigrationProvider,
} from 'kysely';

export interface UsersTable {
  id: Generated<string>;
  email: string;
  name: string | null;
  verified_at: Date | null;
  verification_requested_at: Generated<Date>;
  created_at: Generated<Date>;
}

export interface EmailVerificationTokensTable {
  token_hash: Buffer;
  user_id: string;
  expires_at: Date;
  used_at: Date | null;
  created_at: Generated<Date>;
}

export interface OutboxTable {
  id: Generated<string>;
  queue: string;
  job_name: string;
  payload: unknown;
  created_at: Generated<Date>;
  published_at: Date | null;
  /** Failed relay passes (Redis up); at OUTBOX_MAX_FAILURES the relay skips the row. */
  failures: Generated<number>;
  last_error: string | null;
  /** W3C trace context of the producing request (tracing on), carried into the job. */
  trace_context: ColumnType<TraceContext | null, string | null | undefined, string | null>;
}

export interface SentEmailsTable {
  job_id: string;
  sent_at: Generated<Date>;
}

/** The signup throttle per address with any `+tag` removed (migration 004). */
export interface SignupThrottleTable {
  address_key: string;
  last_queued_at: Generated<Date>;
}

export type OrderStatus = 'pending' | 'paid' | 'failed' | 'expired';

export interface OrdersTable {
  id: Generated<string>;
  email: string;
  // bigint arrives as a string; repositories convert it (amounts stay below 2^53).
  amount: ColumnType<string, number, number>;
  currency: string;
  status: ColumnType<OrderStatus, OrderStatus | undefined, OrderStatus>;
  provider_ref: string;
  paid_at: Date | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  /** When the reconciliation sweep last asked the provider (null: never). */
  last_checked_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface PaymentEventsTable {
  event_id: string;
  type: string;
  /** Null for an event type errand does not handle that carries no providerRef. */
  provider_ref: string | null;
  order_id: string | null;
  transitioned: boolean;
  received_at: Generated<Date>;
}

export interface Database {
  users: UsersTable;
  email_verification_tokens: EmailVerificationTokensTable;
  outbox: OutboxTable;
  sent_emails: SentEmailsTable;
  orders: OrdersTable;
  payment_events: PaymentEventsTable;
  signup_throttle: SignupThrottleTable;
}

export type Db = Kysely<Database>;

export interface PoolTimeouts {
  /** Server side: PostgreSQL cancels a statement running longer (0 = off). */
  statementTimeoutMs?: number;
  /** Client side: the query promise rejects after this, even if the server never answers (0 = off). */
  queryTimeoutMs?: number;
  /** TCP keep-alive on pooled connections, so a dead peer is noticed (0 = off). */
  keepAliveDelayMs?: number;
}

/** How long a query waits for a pooled connection before failing (then answered 503); shared statements wait as long. */
export const POOL_CONNECT_TIMEOUT_MS = 3000;

/** Shared statements in flight at once per batcher; callers arriving meanwhile wait for the next one (a fraction of the pool). */
const SHARED_STATEMENTS_IN_FLIGHT = 2;

/**
 * A PostgreSQL statement shared by concurrent callers (createBatcher), with what every such statement needs:
 * at most SHARED_STATEMENTS_IN_FLIGHT at once, a batch that failed on a lock conflict run again caller by caller,
 * and a caller not started within the pool's connection timeout answered as the database being unavailable.
 */
export function createStatementBatcher<I, O>(options: Pick<BatcherOptions<I, O>, 'run' | 'maxBatch' | 'keysOf'>): (item: I) => Promise<O> {
  return createBatcher({
    ...options,
    maxInFlight: SHARED_STATEMENTS_IN_FLIGHT,
    retryAlone: isLockConflict,
    maxWait: { ms: POOL_CONNECT_TIMEOUT_MS, error: databaseBusyError },
  });
}

// bigint ids come back as strings; keep them strings (they never do arithmetic).
export function createDb(databaseUrl: string, poolMax = 10, timeouts: PoolTimeouts = {}): Db {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: poolMax,
    connectionTimeoutMillis: POOL_CONNECT_TIMEOUT_MS,
    ...(timeouts.statementTimeoutMs ? { statement_timeout: timeouts.statementTimeoutMs } : {}),
    ...(timeouts.queryTimeoutMs ? { query_timeout: timeouts.queryTimeoutMs } : {}),
    ...(timeouts.keepAliveDelayMs ? { keepAlive: true, keepAliveInitialDelayMillis: timeouts.keepAliveDelayMs } : {}),
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', () => {});
  // Nor may a checked-out one: the pool listens only to idle clients, so a socket reset between (or just after)
  // queries was an uncaught exception. The query in flight still gets the error; pg drops the broken client.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  poolsByDb.set(db, pool);
  return db;
}

// The pool behind each Db from createDb, for `executePrepared` (Kysely runs every query unnamed).
const poolsByDb = new WeakMap<Db, pg.Pool>();

/** Transitional (src/db/ replaces this file): lets the statements not yet moved run prepared on a src/db pool. */
export function registerPool(db: Db, pool: pg.Pool): void {
  poolsByDb.set(db, pool);
}
const statementNames = new Map<string, string>();

/** A stable name per statement text: the same SQL reuses the statement each connection already prepared. */
function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `errand_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

/**
 * Runs a Kysely-compiled query as a named prepared statement: PostgreSQL parses and plans it once per
 * connection instead of on every call (for the request path's multi-CTE statements that is most of the
 * server's work per request), and the client skips Kysely's per-query connection handling. Values stay
 * bound parameters. For hot statements whose text is one of a few fixed variants; inside a transaction
 * (a Db that createDb did not make) it runs through Kysely as usual.
 */
export async function executePrepared<Row>(db: Db, compiled: CompiledQuery<Row>): Promise<Row[]> {
  const pool = poolsByDb.get(db);
  if (pool === undefined) return (await db.executeQuery(compiled)).rows;
  const run = () =>
    pool.query<Row & pg.QueryResultRow>({
      name: statementName(compiled.sql),
      text: compiled.sql,
      values: compiled.parameters as unknown[],
    });
  try {
    return (await run()).rows;
  } catch (error) {
    if (!isStalePreparedPlan(error)) throw error;
    // A migration changed a column this statement returns while errand ran (a rolling deploy): PostgreSQL refuses the
    // plan each connection prepared before it. A new name is prepared afresh on every connection; the failed call
    // changed nothing (it runs outside any transaction), so it runs again.
    renameStatement(compiled.sql);
    return (await run()).rows;
  }
}

// feature_not_supported, as PostgreSQL reports "cached plan must not change result type".
function isStalePreparedPlan(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  return code === '0A000' && /cached plan must not change result type/.test(message ?? '');
}

let statementRenames = 0;
function renameStatement(text: string): void {
  const base = statementName(text).replace(/_r\d+$/, '');
  statementNames.set(text, `${base}_r${(statementRenames += 1)}`);
}

/**
 * Builds a Kysely query once and reuses its SQL: on a hot path, building and
 * compiling the query tree costs more CPU than the round trip. `build` gets a
 * placeholder per parameter name; each call sends the same SQL with the real
 * values in their places (still bound parameters, never spliced into the text).
 */
export function compileOnce<Params extends Record<string, unknown>, Row>(
  db: Db,
  names: readonly (keyof Params & string)[],
  build: (db: Db, params: Params) => Compilable<Row>,
): (params: Params) => Promise<Row[]> {
  // NUL never appears in a real value (PostgreSQL text cannot hold it), so a placeholder cannot be mistaken for one.
  const placeholder = (name: string) => `\u0000${name}`;
  const compiled = build(db, Object.fromEntries(names.map((name) => [name, placeholder(name)])) as Params).compile();
  const slots = compiled.parameters.map((value) => names.find((name) => value === placeholder(name)));
  const missing = names.filter((name) => !slots.includes(name));
  if (missing.length > 0) throw new Error(`compileOnce: parameter(s) ${missing.join(', ')} not found in the compiled query`);
  return async (params) => {
    const parameters = compiled.parameters.map((value, i) => (slots[i] === undefined ? value : params[slots[i]]));
    return executePrepared<Row>(db, { ...compiled, parameters });
  };
}

/** Creates the database named in `databaseUrl` if it is missing (so `npm start` works on a bare server); true when it did. */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  if (!name) return false;
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return false;
    // Identifiers cannot be parameters; escape it as PostgreSQL does.
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
    return true;
  } catch (error) {
    // Two processes starting at once: the loser sees duplicate_database (42P04) or a unique violation.
    const code = (error as { code?: string }).code;
    if (code !== '42P04' && code !== '23505') throw error;
    return false;
  } finally {
    await client.end();
  }
}

export const migrationsDir = path.join(packageRoot, 'migrations');

/** What `npm run migrate` shows on a terminal. */
export type MigrationEvent =
  | { kind: 'database'; name: string; created: boolean }
  | { kind: 'plan'; pending: string[]; appliedBefore: number }
  | { kind: 'applied'; name: string; durationMs: number };
export type OnMigrationEvent = (event: MigrationEvent) => void;

/** Plain `.sql` files, applied in name order; each runs in Kysely's migration transaction. */
class SqlFileMigrationProvider implements MigrationProvider {
  constructor(
    private readonly dir: string,
    private readonly onEvent?: OnMigrationEvent,
  ) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(this.dir)).filter((file) => file.endsWith('.sql')).sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      const text = await readFile(path.join(this.dir, file), 'utf8');
      const name = file.replace(/\.sql$/, '');
      migrations[name] = {
        up: async (db) => {
          const started = performance.now();
          await sql.raw(text).execute(db);
          this.onEvent?.({ kind: 'applied', name, durationMs: Math.round(performance.now() - started) });
        },
      };
    }
    return migrations;
  }
}

/** Applies pending migrations; Kysely's lock table makes concurrent callers wait their turn. */
export async function migrateToLatest(db: Db, dir = migrationsDir, onEvent?: OnMigrationEvent): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new SqlFileMigrationProvider(dir, onEvent) });
  if (onEvent) {
    // For display only: another process may apply some of these first (the migrator's lock decides).
    const known = await migrator.getMigrations();
    onEvent({
      kind: 'plan',
      pending: known.filter((m) => !m.executedAt).map((m) => m.name),
      appliedBefore: known.filter((m) => m.executedAt).length,
    });
  }
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error('migration failed', { cause: error });
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Creates the database if missing and applies migrations, on a short-lived pool of its own. */
export async function prepareDatabase(databaseUrl: string, onEvent?: OnMigrationEvent): Promise<string[]> {
  const created = await ensureDatabase(databaseUrl);
  onEvent?.({ kind: 'database', name: decodeURIComponent(new URL(databaseUrl).pathname.slice(1)), created });
  const db = createDb(databaseUrl, 1);
  try {
    return await migrateToLatest(db, migrationsDir, onEvent);
  } finally {
    await db.destroy();
  }
}
