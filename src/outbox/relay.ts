import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Metrics } from '../ops/metrics.js';
import { addRow, groupByQueue, jobForRow, queueForRow, type OutboxDeps, type OutboxRow } from './producer.js';
import { republishRecentRows } from './republish.js';

export interface RelayDeps extends OutboxDeps {
  metrics: Pick<Metrics, 'outboxRowsSkipped'>;
}

export interface RelayOptions {
  graceMs: number;
  batchSize: number;
  /** Failed passes (with Redis up) after which a row is skipped (default 5). */
  maxFailures?: number;
}

interface FailedRow {
  row: OutboxRow;
  error: string;
}

/**
 * Publishes one queue's rows: one `addBulk` (one round trip); if that fails
 * with Redis up, row by row, so the row at fault is found and the rest still go.
 */
async function publishQueueRows(deps: RelayDeps, rows: OutboxRow[], published: string[], failed: FailedRow[]): Promise<boolean> {
  try {
    if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
    await queueForRow(deps.queues, rows[0]).addBulk(rows.map(jobForRow));
    published.push(...rows.map((row) => row.id));
    return true;
  } catch (err) {
    if (deps.redis.status !== 'ready') {
      deps.log.warn({ queue: rows[0].queue, rows: rows.length, err }, 'outbox relay could not publish; will retry');
      return false; // Redis is away: not the rows' fault, and the other queues would fail the same way.
    }
  }
  for (const row of rows) {
    try {
      await addRow(deps.queues, row);
      published.push(row.id);
    } catch (err) {
      if (deps.redis.status !== 'ready') return false;
      failed.push({ row, error: (err as Error).message ?? String(err) });
    }
  }
  return true;
}

/**
 * Publishes up to `batchSize` rows left unpublished for longer than `graceMs`,
 * one `addBulk` per queue. `SKIP LOCKED` lets several relays share the backlog
 * without waiting on each other. A row that fails while Redis is up has its
 * failure counted; at `maxFailures` it is skipped (error log, metric) so it
 * cannot hold up the rows behind it.
 */
export async function relayOutboxBatch(deps: RelayDeps, options: RelayOptions): Promise<number> {
  const maxFailures = options.maxFailures ?? 5;
  return deps.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload', 'trace_context'])
      .where('published_at', 'is', null)
      .where('failures', '<', maxFailures)
      .where('created_at', '<=', new Date(Date.now() - options.graceMs))
      .orderBy('id')
      .limit(options.batchSize)
      .forUpdate()
      .skipLocked()
      .execute();
    if (rows.length === 0) return 0;

    const published: string[] = [];
    const failed: FailedRow[] = [];
    for (const [, queueRows] of groupByQueue(rows)) {
      if (!(await publishQueueRows(deps, queueRows, published, failed))) break;
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
    return published.length;
  });
}

export interface OutboxRelay {
  stop(): Promise<void>;
}

/** How far back a reconnect re-adds published rows: failover detection plus promotion take seconds, not minutes. */
const REPUBLISH_WINDOW_MS = 60_000;

/**
 * Polls for unpublished rows until stopped; drains a backlog batch after batch
 * without sleeping. Each time the producer connection becomes ready (start,
 * reconnect, failover) it first re-adds the rows published in the last minute.
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
  const onReady = () => {
    republishDue = true;
    wake();
  };
  deps.redis.on('ready', onReady);

  const pass = async () => {
    try {
      const published = await relayOutboxBatch(deps, { graceMs: options.graceMs, batchSize, maxFailures });
      if (published > 0) deps.log.info({ published }, 'outbox relay published rows');
      return published;
    } catch (err) {
      deps.log.warn({ err }, 'outbox relay pass failed');
      return 0;
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
      backlog = passes.every((count) => count === batchSize);
      if (!backlog) {
        const idle = new AbortController();
        wake = () => idle.abort();
        await delay(options.intervalMs, undefined, { signal: AbortSignal.any([stopping.signal, idle.signal]) }).catch(() => undefined);
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
