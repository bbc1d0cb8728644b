import type { Job } from 'bullmq';
import { sql } from 'kysely';
import type { Db } from '../db/schema.js';
import { EMAIL_QUEUE, ORDER_TRACKING_LINK_JOB, emailQueue } from '../email/jobs.js';
import { publishAfterCommit, type OutboxDeps } from '../outbox/producer.js';
import { insertOutboxRows, outboxJob, outboxJobId, outboxJobIdSql, type OutboxRow } from '../db/outbox.js';
import { TRACKING_LINKS_BACKFILL_JOB, type TrackingLinksBackfillPayload } from './jobs.js';
import { assertCheckpointWritten, JobCancelledError, runCancellable, runCheckpointed } from './chunks.js';
import { advanceCheckpoint, batchDb, batchTrx, loadOrCreateBatchJob, setBatchJobTotal, type BatchJobState } from './repository.js';
import { databaseNow } from './orders-export.js';

export interface BackfillSummary {
  /** Paid orders looked at. */
  orders: number;
  /** Tracking emails queued by this backfill. */
  queued: number;
  /** Orders whose email was sent, is still on its way, or was queued by an earlier backfill. */
  skipped: number;
}

export interface BackfillDeps extends OutboxDeps {
  chunkRows: number;
  chunkPauseMs: number;
}

// BullMQ states in which a tracking job will still send (or has already run): the backfill leaves those orders alone.
const LIVE_OR_DONE_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'paused', 'completed']);

interface PaidOrder {
  id: string;
  key_paid_at: string;
  backfilled: boolean;
  /** orders.tracking_email_queued_at is set: the settle statement (or a backfill) queued its email. */
  queued: boolean;
  sent: boolean;
  unpublished: boolean;
  /** Outbox ids of this order's earlier tracking jobs (none sent). */
  outbox_ids: string[];
}

function paidOrdersSince(db: Db, since: string, until: string, after: { paidAt: string; id: string } | null, limit: number) {
  const trackingJobs = sql`SELECT ob.id, ob.published_at FROM outbox ob WHERE ob.job_name = ${ORDER_TRACKING_LINK_JOB} AND ob.payload ->> 'orderId' = o.id::text`;
  return sql<PaidOrder>`
    SELECT o.id,
           o.paid_at::text AS key_paid_at,
           EXISTS (SELECT 1 FROM tracking_link_backfills b WHERE b.order_id = o.id) AS backfilled,
           o.tracking_email_queued_at IS NOT NULL AS queued,
           EXISTS (SELECT 1 FROM (${trackingJobs}) t JOIN sent_emails s ON s.job_id = ${outboxJobIdSql(sql`t.id`)}) AS sent,
           EXISTS (SELECT 1 FROM (${trackingJobs}) t WHERE t.published_at IS NULL) AS unpublished,
           ARRAY(SELECT t.id::text FROM (${trackingJobs}) t) AS outbox_ids
      FROM orders o
     WHERE o.status = 'paid'
       AND o.paid_at >= ${since}::timestamptz
       AND o.paid_at <= ${until}::timestamptz
       ${after ? sql`AND (o.paid_at, o.id) > (${after.paidAt}::timestamptz, ${after.id}::uuid)` : sql``}
     ORDER BY o.paid_at, o.id
     LIMIT ${limit}`.execute(db);
}

async function countPaidOrdersSince(db: Db, since: string, until: string): Promise<number> {
  const result = await sql<{ count: string }>`
    SELECT count(*) AS count FROM orders WHERE status = 'paid' AND paid_at >= ${since}::timestamptz AND paid_at <= ${until}::timestamptz`.execute(
    db,
  );
  return Number(result.rows[0].count);
}

/**
 * Whether an order still needs its tracking email:
 * - never queued (tracking_email_queued_at null: set paid by hand) and no earlier backfill queued one; or
 * - queued, but with proof that it never went out: its outbox rows are still there (retention has not pruned them),
 *   none was sent (sent_emails, by job id), none is still on its way (unpublished, or waiting/active/delayed in
 *   BullMQ) or completed: an SMTP misconfiguration failed it for good, say.
 * An order queued whose outbox rows retention pruned is left alone: its email went out (or failed) more than
 * RETENTION_DAYS ago and the records that could tell are gone; a second email is the worse mistake.
 */
async function needsTrackingEmail(deps: OutboxDeps, order: PaidOrder): Promise<boolean> {
  if (order.backfilled || order.sent || order.unpublished) return false;
  if (order.queued && order.outbox_ids.length === 0) return false;
  for (const outboxId of order.outbox_ids) {
    const state = await deps.queues[EMAIL_QUEUE].getJobState(outboxJobId(outboxId));
    if (LIVE_OR_DONE_STATES.has(state)) return false;
  }
  return true;
}

/**
 * The `tracking-links-backfill` job: for every order paid since `since` whose
 * tracking email never went out (an SMTP misconfiguration failed it for good,
 * say), queue one through the outbox. A marker row per order, written with
 * the outbox row, makes that exactly once however often (or how many at once)
 * the backfill runs; the order's tracking_email_queued_at, stamped with it,
 * keeps that so after retention pruned the marker's outbox row.
 */
export async function processTrackingLinksBackfillJob(
  deps: BackfillDeps,
  payload: TrackingLinksBackfillPayload,
  job: Job,
  signal: AbortSignal | undefined,
): Promise<BackfillSummary> {
  const bdb = batchDb(deps.db);
  const jobId = job.id!;
  return runCancellable(bdb, jobId, async () => {
    let state: BatchJobState = await loadOrCreateBatchJob(bdb, { jobId, kind: TRACKING_LINKS_BACKFILL_JOB, params: payload });
    if (state.cancelRequested || state.cancelled) throw new JobCancelledError();
    const summaryOf = (s: BatchJobState): BackfillSummary => ({
      orders: s.rowsDone,
      queued: s.counts.queued ?? 0,
      skipped: s.rowsDone - (s.counts.queued ?? 0),
    });
    if (state.finished) return summaryOf(state);
    if (typeof state.params.until !== 'string' || state.total === null) {
      const until = await databaseNow(deps.db);
      const total = await countPaidOrdersSince(deps.db, payload.since, until);
      await setBatchJobTotal(bdb, jobId, total, { ...payload, until });
      state = { ...state, params: { ...payload, until }, total };
    }
    const until = state.params.until as string;
    let after = state.cursor ? { paidAt: state.cursor.paidAt, id: state.cursor.id } : null;
    let { chunksDone, rowsDone } = state;
    let queued = state.counts.queued ?? 0;
    await runCheckpointed(job, signal, {
      done: rowsDone,
      total: state.total,
      pauseMs: deps.chunkPauseMs,
      commitNextChunk: async () => {
        const { rows } = await paidOrdersSince(deps.db, payload.since, until, after, deps.chunkRows);
        const due: string[] = [];
        for (const order of rows) if (await needsTrackingEmail(deps, order)) due.push(order.id);
        const last = rows[rows.length - 1];
        const nextAfter = last ? { paidAt: last.key_paid_at, id: last.id } : after;
        const final = rows.length < deps.chunkRows;

        const outboxRows: OutboxRow[] = await deps.db.transaction().execute(async (trx) => {
          const btrx = batchTrx(trx);
          // Claim first: a concurrent backfill that claimed an order meanwhile wins it, and this one queues nothing for it.
          const claimed =
            due.length === 0
              ? []
              : await btrx
                  .insertInto('tracking_link_backfills')
                  .values(due.map((orderId) => ({ order_id: orderId, outbox_id: '0', job_id: jobId })))
                  .onConflict((oc) => oc.column('order_id').doNothing())
                  .returning('order_id')
                  .execute();
          const inserted = await insertOutboxRows(
            trx,
            outboxJob(emailQueue, ORDER_TRACKING_LINK_JOB),
            claimed.map((c) => ({ orderId: c.order_id })),
          );
          if (claimed.length > 0) {
            // Rows locked in id order, as the settle statement locks them: the two cannot deadlock.
            await sql`
            update orders set tracking_email_queued_at = now()
            from (select id from orders where id = any(${claimed.map((c) => c.order_id)}::uuid[]) order by id for no key update) as due
            where orders.id = due.id`.execute(trx);
          }
          for (const row of inserted) {
            await btrx
              .updateTable('tracking_link_backfills')
              .set({ outbox_id: row.id })
              .where('order_id', '=', (row.payload as { orderId: string }).orderId)
              .execute();
          }
          const outcome = await advanceCheckpoint(btrx, {
            jobId,
            expectedChunks: chunksDone,
            cursor: nextAfter,
            rows: rowsDone + rows.length,
            bytes: 0,
            counts: { queued: queued + inserted.length },
            finished: final,
          });
          assertCheckpointWritten(outcome, jobId);
          return inserted;
        });
        chunksDone += 1;
        rowsDone += rows.length;
        queued += outboxRows.length;
        after = nextAfter;
        return { done: rowsDone, final, outboxRows };
      },
      afterCommit: (chunk) => publishAfterCommit(deps, chunk.outboxRows),
    });
    deps.log.info({ jobId, orders: rowsDone, queued }, 'tracking links backfill finished');
    return { orders: rowsDone, queued, skipped: rowsDone - queued };
  });
}
