import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Compilable, CompiledQuery, RawBuilder } from 'kysely';
import type { Db } from './schema.js';

/**
 * Named prepared statements on one pool, with pg's own `name` option: PostgreSQL parses and plans a statement
 * once per connection instead of on every call (for the request path's multi-CTE statements that is most of the
 * server's work per request), and the client skips Kysely's per-query connection handling. Values stay bound
 * parameters. For hot statements whose text is one of a few fixed variants.
 */
export interface PreparedStatements {
  /** Runs raw SQL as a named prepared statement (the name is derived from the text). */
  query<Row>(text: string, values: readonly unknown[]): Promise<Row[]>;
  /** Runs a Kysely-compiled query as a named prepared statement. */
  execute<Row>(compiled: CompiledQuery<Row>): Promise<Row[]>;
  /**
   * Builds a Kysely query (or `sql` template) once and reuses its SQL as a named prepared statement: on a hot path,
   * building and compiling the query tree costs more CPU than the round trip. `build` gets a placeholder per
   * parameter name; each call sends the same SQL with the real values in their places (still bound parameters,
   * never spliced into the text).
   */
  compile<Params extends Record<string, unknown>, Row>(
    names: readonly (keyof Params & string)[],
    build: (params: Params, db: Db) => Compilable<Row> | RawBuilder<Row>,
  ): (params: Params) => Promise<Row[]>;
}

export function createPreparedStatements(pool: pg.Pool, db: Db): PreparedStatements {
  // A stable name per statement text: the same SQL reuses the statement each connection already prepared.
  const names = new Map<string, string>();
  let renames = 0;
  const nameOf = (text: string): string => {
    let name = names.get(text);
    if (name === undefined) {
      name = `errand_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
      names.set(text, name);
    }
    return name;
  };
  const query = async <Row>(text: string, values: readonly unknown[]): Promise<Row[]> => {
    const run = () => pool.query<Row & pg.QueryResultRow>({ name: nameOf(text), text, values: values as unknown[] });
    try {
      return (await run()).rows;
    } catch (error) {
      if (!isStalePreparedPlan(error)) throw error;
      // A migration changed a column this statement returns while errand ran (a rolling deploy): PostgreSQL refuses
      // the plan each connection prepared before it. A new name is prepared afresh on every connection; the failed
      // call changed nothing (it runs outside any transaction), so it runs again.
      names.set(text, `${nameOf(text).replace(/_r\d+$/, '')}_r${(renames += 1)}`);
      return (await run()).rows;
    }
  };
  return {
    query,
    execute: (compiled) => query(compiled.sql, compiled.parameters),
    compile: (names, build) => compileOnce(db, query, names, build),
  };
}

// feature_not_supported, as PostgreSQL reports "cached plan must not change result type".
function isStalePreparedPlan(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  return code === '0A000' && /cached plan must not change result type/.test(message ?? '');
}

function compileOnce<Params extends Record<string, unknown>, Row>(
  db: Db,
  query: PreparedStatements['query'],
  names: readonly (keyof Params & string)[],
  build: (params: Params, db: Db) => Compilable<Row> | RawBuilder<Row>,
): (params: Params) => Promise<Row[]> {
  // NUL never appears in a real value (PostgreSQL text cannot hold it), so a placeholder cannot be mistaken for one.
  const placeholder = (name: string) => `\u0000${name}`;
  const built = build(Object.fromEntries(names.map((name) => [name, placeholder(name)])) as Params, db);
  const compiled = 'isRawBuilder' in built ? built.compile(db) : built.compile();
  const slots = compiled.parameters.map((value) => names.find((name) => value === placeholder(name)));
  const missing = names.filter((name) => !slots.includes(name));
  if (missing.length > 0) throw new Error(`compileOnce: parameter(s) ${missing.join(', ')} not found in the compiled query`);
  return (params) => {
    const parameters = compiled.parameters.map((value, i) => (slots[i] === undefined ? value : params[slots[i]]));
    return query<Row>(compiled.sql, parameters);
  };
}
