import { notCancelled } from '../db/cancelled-jobs.js';
import { groupByQueue, jobForRow, queueForRow, type OutboxDeps, type OutboxRow } from './producer.js';

/**
 * After a Sentinel or Cluster failover the new primary may lack jobs the old
 * one acknowledged but had not replicated yet (replication is asynchronous),
 * and their outbox rows are already marked published. So whenever the
 * producer connection becomes ready again, the rows published in the last
 * `windowMs` are added once more: a job still in Redis keeps its id and the
 * add is a no-op; a lost one comes back; an email that did go out is not sent
 * twice (`sent_emails`). A cancelled row is never re-added. Returns how many rows were re-added.
 */
export async function republishRecentRows(deps: OutboxDeps, options: { windowMs: number; batchSize: number }): Promise<number> {
  const since = new Date(Date.now() - options.windowMs);
  let afterId = '0';
  let total = 0;
  for (;;) {
    const rows: OutboxRow[] = await deps.db
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload', 'trace_context'])
      .where('published_at', '>=', since)
      .where(notCancelled)
      .where('id', '>', afterId)
      .orderBy('id')
      .limit(options.batchSize)
      .execute();
    if (rows.length === 0) return total;
    for (const queueRows of groupByQueue(rows).values()) {
      await queueForRow(deps.queues, queueRows[0]).addBulk(queueRows.map(jobForRow));
    }
    total += rows.length;
    afterId = rows.at(-1)!.id;
  }
}
