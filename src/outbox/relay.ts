import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Metrics } from '../ops/metrics.js';
import { jobForRow, queueForRow, type OutboxDeps, type OutboxRow } from './producer.js';

export interface RelayDeps extends OutboxDeps {
  metrics: Pick<Metrics, 'outboxRowsSkipped'>;
}

export interface RelayOptions {
  graceMs: number;
  batchSize: number;
  /** Failed passes (with Redis up) after which a row is skipped. */
  maxFailures: number;
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
    await queueForRow(deps.queues, rows[0]!).addBulk(rows.map(jobForRow));
    published.push(...rows.map((row) => row.id));
    return true;
  } catch (err) {
    if (deps.redis.status !== 'ready') {
      deps.log.warn({ queue: rows[0]!.queue, rows: rows.length, err }, 'outbox relay could not publish; will retry');
      return false; // Redis is away: not the rows' fault, and the other queues would fail the same way.
    }
  }
  for (const row of rows) {
    try {
      const job = jobForRow(row);
      await queueForRow(deps.queues, row).add(job.name, job.data, job.opts);
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
  return deps.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload'])
      .where('published_at', 'is', null)
      .where('failures', '<', options.maxFailures)
      .where('created_at', '<=', new Date(Date.now() - options.graceMs))
      .orderBy('id')
      .limit(options.batchSize)
      .forUpdate()
      .skipLocked()
      .execute();
    if (rows.length === 0) return 0;

    const byQueue = new Map<string, OutboxRow[]>();
    for (const row of rows) byQueue.set(row.queue, [...(byQueue.get(row.queue) ?? []), row]);
    const published: string[] = [];
    const failed: FailedRow[] = [];
    for (const queueRows of byQueue.values()) {
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
      if (counted.failures >= options.maxFailures) {
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

/** Polls for unpublished rows until stopped; drains a backlog batch after batch without sleeping. */
export function startOutboxRelay(deps: RelayDeps, options: { intervalMs: number; graceMs: number; batchSize?: number; maxFailures?: number }): OutboxRelay {
  const batchSize = options.batchSize ?? 500;
  const maxFailures = options.maxFailures ?? 5;
  const stopping = new AbortController();

  const loop = async () => {
    while (!stopping.signal.aborted) {
      let published = 0;
      try {
        published = await relayOutboxBatch(deps, { graceMs: options.graceMs, batchSize, maxFailures });
        if (published > 0) deps.log.info({ published }, 'outbox relay published rows');
      } catch (err) {
        deps.log.warn({ err }, 'outbox relay pass failed');
      }
      if (published < batchSize) await delay(options.intervalMs, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
  };
  const running = loop();

  return {
    async stop() {
      stopping.abort();
      await running;
    },
  };
}
