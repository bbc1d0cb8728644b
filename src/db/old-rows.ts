import { sql, type RawBuilder } from 'kysely';
import type { Db } from './schema.js';

/**
 * Retention's one statement shape: deletes at most `limit` rows of `table` for which `isOld` holds, by their key
 * columns (`DELETE … WHERE (key) IN (SELECT key … LIMIT n)`): short statements and short locks, so the live tables
 * keep serving while a backlog of months is cleared. Returns how many it deleted.
 */
export async function deleteOldRows(
  db: Db,
  table: string,
  keys: readonly string[],
  isOld: RawBuilder<boolean>,
  limit: number,
): Promise<number> {
  const key = sql.join(keys.map((column) => sql.ref(column)));
  const result = await sql`
    delete from ${sql.table(table)}
    where (${key}) in (
      -- Rows another transaction holds (a signup re-arming its throttle row) wait for the next batch: no lock waits, no deadlocks.
      select ${key} from ${sql.table(table)} where ${isOld} limit ${limit} for update skip locked
    )`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
