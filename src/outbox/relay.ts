import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Metrics } from '../ops/metrics.js';
import { addRow, groupByQueue, jobForRow, queueForRow, type OutboxDeps, type OutboxRow } from './producer.js';
import { republishRecentRows } from './republish.js';
import { isRowFault } from './row-fault.js';
import { notCancelled } from '../db/cancelled-jobs.js';

export interface RelayDeps extends OutboxDeps {
  metrics: Pick<Metrics, 'outboxRowsSkipped'>;
}

export interface RelayOptions {
  graceMs: number;
  batchSize: number;
  /** Passes failed for the row's own fault (`isRowFault`) after which it is skipped (default 5). */
  maxFailures?: number;
}

interface FailedRow {
  row: OutboxRow;
  error: string;
}

/** What one relay pass did: rows published, and whether it stopped because Redis could not take writes. */
export interface RelayPassResult {
  published: number;
  redisUnavailable: boolean;
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * Publishes one queue's rows: one `addBulk` (one round trip). Only when that fails for a row's own fault
 * (`isRowFault`) does it go row by row, so the row at fault is found and the rest still go. Any other error
 * (Redis out of memory, read-only, loading, paused, timing out, away) means Redis cannot take writes now:
 * it returns false and no row is blamed.
 */
async function publishQueueRows(deps: RelayDeps, rows: OutboxRow[], published: string[], failed: FailedRow[]): Promise<boolean> {
  const unavailable = (err: unknown) => {
    deps.log.warn({ queue: rows[0].queue, rows: rows.length, err }, 'outbox relay could not publish; will retry');
    return false; // Not the rows' fault, and the other queues would fail the same way.
  };
  try {
    if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
    await queueForRow(deps.queues, rows[0]).addBulk(rows.map(jobForRow));
    published.push(...rows.map((row) => row.id));
    return true;
  } catch (err) {
    if (!isRowFault(err)) return unavailable(err);
  }
  for (const row of rows) {
    try {
      await addRow(deps.queues, row);
      published.push(row.id);
    } catch (err) {
      if (!isRowFault(err)) return unavailable(err);
      failed.push({ row, error: messageOf(err) });
    }
  }
  return true;
}

/**
 * Publishes up to `batchSize` rows left unpublished for longer than `graceMs`,
 * one `addBulk` per queue. `SKIP LOCKED` lets several relays share the backlog
 * without waiting on each other. A row whose publish fails for its own fault
 * (`isRowFault`) has its failure counted; at `maxFailures` it is skipped (error
 * log, metric) so it cannot hold up the rows behind it. Any other failure
 * leaves every row as it was and reports `redisUnavailable`. Cancelled rows are
 * never published.
 */
export async function relayOutboxPass(deps: RelayDeps, options: RelayOptions): Promise<RelayPassResult> {
  const maxFailures = options.maxFailures ?? 5;
  return deps.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload', 'trace_context'])
      .where('published_at', 'is', null)
      .where(notCancelled)
      .where('failures', '<', maxFailures)
      .where('created_at', '<=', new Date(Date.now() - options.graceMs))
      .orderBy('id')
      .limit(options.batchSize)
      .forUpdate()
      .skipLocked()
      .execute();
    if (rows.length === 0) return { published: 0, redisUnavailable: false };

    const published: string[] = [];
    const failed: FailedRow[] = [];
    let redisUnavailable = false;
    for (const [, queueRows] of groupByQueue(rows)) {
      if (!(await publishQueueRows(deps, queueRows, published, failed))) {
        redisUnavailable = true;
        break;
      }
    }
    if (published.length > 0) {
      await trx.updateTable('outbox').set({ published_at: new Date() }).where('id', 'in', published).execute();
    }
    for (const { row, error } of failed) {
      const counted = await trx
        .updateTable('outbox')
        .set({ failures: sql<number>`failures + 1`, last_error: error.slice(0, 1000) })
        .where('id', '=', row.id)
        .returning('failures')
        .executeTakeFirstOrThrow();
      const fields = { outboxId: row.id, queue: row.queue, jobName: row.job_name, failures: counted.failures, reason: error };
      if (counted.failures >= maxFailures) {
        deps.metrics.outboxRowsSkipped.inc({ queue: row.queue });
        deps.log.error(fields, 'outbox row skipped after repeated failures; fix it and reset outbox.failures to 0 to publish it');
      } else {
        deps.log.warn(fields, 'outbox row could not be published; will retry');
      }
    }
    return { published: published.length, redisUnavailable };
  });
}

/** `relayOutboxPass`, counting only the rows published. */
export async function relayOutboxBatch(deps: RelayDeps, options: RelayOptions): Promise<number> {
  return (await relayOutboxPass(deps, options)).published;
}

export interface OutboxRelay {
  stop(): Promise<void>;
}

/** How far back a reconnect re-adds published rows: failover detection plus promotion take seconds, not minutes. */
const REPUBLISH_WINDOW_MS = 60_000;

/** The relay's longest wait between passes while Redis refuses writes (or PostgreSQL fails the pass). */
const MAX_BACKOFF_MS = 10_000;

/**
 * The wait before the next pass after `failedPasses` consecutive passes that met Redis (or PostgreSQL) unable to
 * take them: the poll interval, doubled per failed pass, capped at MAX_BACKOFF_MS (or the interval, if longer).
 */
export function relayBackoffMs(intervalMs: number, failedPasses: number): number {
  if (failedPasses <= 0) return intervalMs;
  return Math.min(intervalMs * 2 ** Math.min(failedPasses, 30), Math.max(intervalMs, MAX_BACKOFF_MS));
}

/**
 * Polls for unpublished rows until stopped; drains a backlog batch after batch
 * without sleeping. Each time the producer connection becomes ready (start,
 * reconnect, failover) it first re-adds the rows published in the last minute.
 * While Redis refuses writes (out of memory, read-only, loading, paused) it
 * keeps every row and waits longer between passes (`relayBackoffMs`).
 */
export function startOutboxRelay(
  deps: RelayDeps,
  options: { intervalMs: number; graceMs: number; batchSize?: number; maxFailures?: number },
): OutboxRelay {
  const batchSize = options.batchSize ?? 500;
  const maxFailures = options.maxFailures ?? 5;
  const stopping = new AbortController();
  let wake = () => {};
  let republishDue = deps.redis.status === 'ready';
  let failedPasses = 0;
  const onReady = () => {
    republishDue = true;
    failedPasses = 0;
    wake();
  };
  deps.redis.on('ready', onReady);

  const pass = async (): Promise<RelayPassResult> => {
    try {
      const result = await relayOutboxPass(deps, { graceMs: options.graceMs, batchSize, maxFailures });
      if (result.published > 0) deps.log.info({ published: result.published }, 'outbox relay published rows');
      return result;
    } catch (err) {
      deps.log.warn({ err }, 'outbox relay pass failed');
      return { published: 0, redisUnavailable: true };
    }
  };
  let backlog = false;
  const loop = async () => {
    while (!stopping.signal.aborted) {
      if (republishDue && deps.redis.status === 'ready') {
        republishDue = false;
        try {
          const republished = await republishRecentRows(deps, { windowMs: REPUBLISH_WINDOW_MS, batchSize });
          if (republished > 0) deps.log.info({ republished }, 'outbox relay re-added recently published rows after (re)connecting');
        } catch (err) {
          republishDue = true;
          deps.log.warn({ err }, 'outbox relay could not re-add recently published rows; will retry');
        }
      }
      // Draining a backlog: two passes at once (SKIP LOCKED gives them different rows), so one pass's
      // PostgreSQL work overlaps the other's Redis work. A quiet poll is one pass.
      const passes = backlog ? await Promise.all([pass(), pass()]) : [await pass()];
      const unavailable = passes.some((result) => result.redisUnavailable);
      failedPasses = unavailable ? failedPasses + 1 : 0;
      backlog = !unavailable && passes.every((result) => result.published === batchSize);
      if (!backlog) {
        const waitMs = relayBackoffMs(options.intervalMs, failedPasses);
        if (unavailable) deps.log.debug({ waitMs, failedPasses }, 'outbox relay backing off');
        const idle = new AbortController();
        wake = () => idle.abort();
        await delay(waitMs, undefined, { signal: AbortSignal.any([stopping.signal, idle.signal]) }).catch(() => undefined);
      }
    }
  };
  const running = loop();

  return {
    async stop() {
      deps.redis.off('ready', onReady);
      stopping.abort();
      await running;
    },
  };
}
