import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import type { Database, Db } from './schema.js';
import { createPreparedStatements, type PreparedStatements } from './prepared.js';

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

/**
 * One PostgreSQL pool and everything that runs on it: Kysely for ordinary queries, the pool itself for named
 * prepared statements, and whether statements shared by concurrent callers are batched (DB_BATCHING). Built once
 * by createDeps (or a script, a test) and passed to every statement factory; nothing is looked up in module state.
 */
export interface DataLayer {
  readonly db: Db;
  readonly pool: pg.Pool;
  readonly prepared: PreparedStatements;
  /** False: each caller's row runs as a statement of its own (DB_BATCHING=off, for debugging). */
  readonly batching: boolean;
  /** Ends the pool (after the statements in flight). */
  destroy(): Promise<void>;
}

export interface DataLayerOptions extends PoolTimeouts {
  poolMax?: number;
  batching?: boolean;
}

// bigint ids come back as strings; keep them strings (they never do arithmetic).
export function createDataLayer(databaseUrl: string, options: DataLayerOptions = {}): DataLayer {
  const { poolMax = 10, batching = true, statementTimeoutMs, queryTimeoutMs, keepAliveDelayMs } = options;
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: poolMax,
    connectionTimeoutMillis: POOL_CONNECT_TIMEOUT_MS,
    ...(statementTimeoutMs ? { statement_timeout: statementTimeoutMs } : {}),
    ...(queryTimeoutMs ? { query_timeout: queryTimeoutMs } : {}),
    ...(keepAliveDelayMs ? { keepAlive: true, keepAliveInitialDelayMillis: keepAliveDelayMs } : {}),
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', () => {});
  // Nor may a checked-out one: the pool listens only to idle clients, so a socket reset between (or just after)
  // queries was an uncaught exception. The query in flight still gets the error; pg drops the broken client.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return { db, pool, prepared: createPreparedStatements(pool, db), batching, destroy: () => db.destroy() };
}

/** A plain Kysely on a pool of its own, for scripts and tests that run no prepared or batched statement. */
export function createDb(databaseUrl: string, poolMax = 10, timeouts: PoolTimeouts = {}): Db {
  return createDataLayer(databaseUrl, { poolMax, ...timeouts }).db;
}
