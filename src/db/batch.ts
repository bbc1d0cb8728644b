import { createBatcher, type BatcherOptions } from './batcher.js';
import { databaseBusyError } from '../core/errors.js';
import { POOL_CONNECT_TIMEOUT_MS } from './pool.js';

/** Shared statements in flight at once per batcher; callers arriving meanwhile wait for the next one (a fraction of the pool). */
const SHARED_STATEMENTS_IN_FLIGHT = 2;

// deadlock_detected, serialization_failure.
const RETRY_ALONE_CODES = new Set(['40P01', '40001']);

/**
 * Whether a shared statement that failed is worth running again caller by caller: only when PostgreSQL aborted it
 * for what it met in other transactions (a deadlock, a serialization failure), which a smaller statement can
 * escape. Not a statement or lock timeout (57014, 55P03): every piece would wait as long again, and a batch of
 * hundreds re-run piece by piece turned one slow statement into hundreds.
 */
export function shouldRetryAlone(error: unknown): boolean {
  const { code } = (error ?? {}) as { code?: string };
  return code !== undefined && RETRY_ALONE_CODES.has(code);
}

export type StatementBatchOptions<I, O> = Pick<BatcherOptions<I, O>, 'run' | 'maxBatch' | 'keysOf'>;

/**
 * A PostgreSQL statement shared by concurrent callers (createBatcher), with what every such statement needs:
 * at most SHARED_STATEMENTS_IN_FLIGHT at once (retries included), a batch that failed on a deadlock or
 * serialization failure run again caller by caller, and a caller not started within the pool's connection
 * timeout answered as the database being unavailable.
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
    retryAlone: shouldRetryAlone,
    maxWait: { ms: POOL_CONNECT_TIMEOUT_MS, error: databaseBusyError },
  });
}
