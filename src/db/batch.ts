import { createBatcher, type BatcherOptions } from './batcher.js';
import { databaseBusyError, isLockConflict } from '../core/errors.js';
import { POOL_CONNECT_TIMEOUT_MS } from './pool.js';

/** Shared statements in flight at once per batcher; callers arriving meanwhile wait for the next one (a fraction of the pool). */
const SHARED_STATEMENTS_IN_FLIGHT = 2;

export type StatementBatchOptions<I, O> = Pick<BatcherOptions<I, O>, 'run' | 'maxBatch' | 'keysOf'>;

/**
 * A PostgreSQL statement shared by concurrent callers (createBatcher), with what every such statement needs:
 * at most SHARED_STATEMENTS_IN_FLIGHT at once, a batch that failed on a lock conflict run again caller by caller,
 * and a caller not started within the pool's connection timeout answered as the database being unavailable.
 *
 * With `batching` off (DB_BATCHING=off) every caller's item runs at once as a statement of its own, as it would
 * without this layer: for debugging one statement at a time, and for measuring what the batching buys.
 */
export function createStatementBatcher<I, O>(data: { batching: boolean }, options: StatementBatchOptions<I, O>): (item: I) => Promise<O> {
  if (!data.batching) {
    const { run } = options;
    return async (item) => {
      const results = await run([item]);
      if (results.length !== 1) throw new Error(`statement returned ${results.length} results for 1 item`);
      return results[0];
    };
  }
  return createBatcher({
    ...options,
    maxInFlight: SHARED_STATEMENTS_IN_FLIGHT,
    retryAlone: isLockConflict,
    maxWait: { ms: POOL_CONNECT_TIMEOUT_MS, error: databaseBusyError },
  });
}
