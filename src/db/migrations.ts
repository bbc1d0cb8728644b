import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { Migrator, sql, type Migration, type MigrationProvider } from 'kysely';
import { packageRoot } from '../core/package-root.js';
import { createDb } from './pool.js';
import type { Db } from './schema.js';

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
