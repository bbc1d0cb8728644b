import { sql } from 'kysely';
import { deleteExpiredBatchData } from '../batch/repository.js';
import { deleteOldCancellations } from '../db/cancelled-jobs.js';
import { deleteOldRows } from '../db/old-rows.js';
import { deleteOldDeliveryTokens, deleteOldEmailEvents } from '../db/suppressions.js';
import type { Db } from '../db/schema.js';
import type { Logger } from '../core/logger.js';

/**
 * One kind of old row the retention job deletes: `deleteBatch` removes at
 * most `limit` rows older than `cutoff` in one short statement and returns
 * how many it removed. Add a table by adding a deleter to retentionDeleters.
 */
export interface RetentionDeleter {
  /** Key in the job's result and label of errand_retention_deleted_rows_total. */
  name: string;
  deleteBatch(db: Db, cutoff: Date, limit: number): Promise<number>;
}

/** What some deleters need besides the cutoff. */
export interface RetentionPolicy {
  /** EMAIL_SOFT_BOUNCE_WINDOW_DAYS: soft bounces this recent still count, so they stay whatever the cutoff. */
  softBounceWindowDays: number;
}

export const retentionDeleters = (policy: RetentionPolicy): readonly RetentionDeleter[] => [
  {
    // Published only: an unpublished row is a job not yet in Redis, whatever its age.
    name: 'outbox',
    deleteBatch: (db, cutoff, limit) => deleteOldRows(db, 'outbox', ['id'], sql`published_at < ${cutoff}`, limit),
  },
  {
    // The no-second-send record: its job has long left Redis (completed jobs are kept 24 h).
    name: 'sentEmails',
    deleteBatch: (db, cutoff, limit) => deleteOldRows(db, 'sent_emails', ['job_id'], sql`sent_at < ${cutoff}`, limit),
  },
  {
    // Webhook event ids: a replay older than this would be applied again, and finds its order already settled.
    name: 'paymentEvents',
    deleteBatch: (db, cutoff, limit) => deleteOldRows(db, 'payment_events', ['event_id'], sql`received_at < ${cutoff}`, limit),
  },
  {
    // Used or expired before the cutoff: such a token can never verify anything again.
    name: 'verificationTokens',
    deleteBatch: (db, cutoff, limit) =>
      deleteOldRows(db, 'email_verification_tokens', ['token_hash'], sql`used_at < ${cutoff} or expires_at < ${cutoff}`, limit),
  },
  {
    // Throttle rows only matter for 60 s.
    name: 'signupThrottle',
    deleteBatch: (db, cutoff, limit) => deleteOldRows(db, 'signup_throttle', ['address_key'], sql`last_queued_at < ${cutoff}`, limit),
  },
  {
    // Bounce and complaint ids (a replay older than this is taken as new); soft bounces stay while they count toward
    // EMAIL_SOFT_BOUNCE_LIMIT. The suppressions themselves are never pruned.
    name: 'emailEvents',
    deleteBatch: (db, cutoff, limit) => deleteOldEmailEvents(db, cutoff, policy.softBounceWindowDays, limit),
  },
  {
    // Mailgun's one-use tokens: a replay must come within 300 s of its signature, so these are long refused anyway.
    name: 'emailDeliveryTokens',
    deleteBatch: (db, cutoff, limit) => deleteOldDeliveryTokens(db, cutoff, limit),
  },
  {
    // Cancel markers. Safe to drop: the relay and the re-publish skip a cancelled row by its own outbox.cancelled_at (an
    // unpublished row is never pruned), and the re-publish looks back only 60 s. Workers read the marker, for a job a
    // racing add or a failover brought back, which runs within minutes; job ids (`outboxJobId`: one per row) are never reused.
    name: 'cancelledJobs',
    deleteBatch: (db, cutoff, limit) => deleteOldCancellations(db, cutoff, limit),
  },
  {
    // Batch jobs untouched for the period (finished, cancelled or abandoned), with their export files and import uploads and errors.
    name: 'batchJobs',
    deleteBatch: (db, cutoff, limit) => deleteExpiredBatchData(db, cutoff, limit),
  },
];

export interface RetentionOptions extends RetentionPolicy {
  retentionDays: number;
  batchSize: number;
  deleters?: readonly RetentionDeleter[];
  signal?: AbortSignal;
  /** After each table, with the counts so far. */
  onProgress?(deleted: Record<string, number>): void | Promise<void>;
}

export interface RetentionSummary {
  cutoff: string;
  deleted: Record<string, number>;
  durationMs: number;
}

/** Deletes what every deleter finds older than `retentionDays`, batch after batch; returns the counts. */
export async function runRetention(db: Db, log: Logger, options: RetentionOptions): Promise<RetentionSummary> {
  const started = performance.now();
  // The database's clock, as the rows' timestamps are the database's.
  const { rows } = await sql<{ cutoff: Date }>`select now() - make_interval(days => ${options.retentionDays}) as cutoff`.execute(db);
  const cutoff = rows[0].cutoff;
  const deleted: Record<string, number> = {};
  for (const deleter of options.deleters ?? retentionDeleters(options)) {
    deleted[deleter.name] = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      const count = await deleter.deleteBatch(db, cutoff, options.batchSize);
      deleted[deleter.name] += count;
      if (count < options.batchSize) break;
    }
    await options.onProgress?.({ ...deleted });
  }
  const summary: RetentionSummary = { cutoff: cutoff.toISOString(), deleted, durationMs: Math.round(performance.now() - started) };
  log.info({ retention: summary }, 'retention finished');
  return summary;
}
