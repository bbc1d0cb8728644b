import { sql } from 'kysely';
import { deleteExpiredBatchData } from '../batch/repository.js';
import type { Db } from '../core/db.js';
import type { Logger } from '../core/logger.js';

/**
 * One kind of old row the retention job deletes: `deleteBatch` removes at
 * most `limit` rows older than `cutoff` in one short statement and returns
 * how many it removed. Add a table by adding a deleter to RETENTION_DELETERS.
 */
export interface RetentionDeleter {
  /** Key in the job's result and label of errand_retention_deleted_rows_total. */
  name: string;
  deleteBatch(db: Db, cutoff: Date, limit: number): Promise<number>;
}

// Each batch is `DELETE … WHERE key IN (SELECT key … LIMIT n)`: short statements and short locks,
// so the live tables keep serving while a backlog of months is cleared.
export const RETENTION_DELETERS: readonly RetentionDeleter[] = [
  {
    // Published only: an unpublished row is a job not yet in Redis, whatever its age.
    name: 'outbox',
    async deleteBatch(db, cutoff, limit) {
      const result = await db
        .deleteFrom('outbox')
        .where('id', 'in', (eb) => eb.selectFrom('outbox').select('id').where('published_at', '<', cutoff).limit(limit))
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  },
  {
    // The no-second-send record: its job has long left Redis (completed jobs are kept 24 h).
    name: 'sentEmails',
    async deleteBatch(db, cutoff, limit) {
      const result = await db
        .deleteFrom('sent_emails')
        .where('job_id', 'in', (eb) => eb.selectFrom('sent_emails').select('job_id').where('sent_at', '<', cutoff).limit(limit))
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  },
  {
    // Webhook event ids: a replay older than this would be applied again, and finds its order already settled.
    name: 'paymentEvents',
    async deleteBatch(db, cutoff, limit) {
      const result = await db
        .deleteFrom('payment_events')
        .where('event_id', 'in', (eb) => eb.selectFrom('payment_events').select('event_id').where('received_at', '<', cutoff).limit(limit))
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  },
  {
    // Used or expired before the cutoff: such a token can never verify anything again.
    name: 'verificationTokens',
    async deleteBatch(db, cutoff, limit) {
      const result = await db
        .deleteFrom('email_verification_tokens')
        .where('token_hash', 'in', (eb) =>
          eb
            .selectFrom('email_verification_tokens')
            .select('token_hash')
            .where((w) => w.or([w('used_at', '<', cutoff), w('expires_at', '<', cutoff)]))
            .limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  },
  {
    // Throttle rows only matter for 60 s.
    name: 'signupThrottle',
    async deleteBatch(db, cutoff, limit) {
      const result = await db
        .deleteFrom('signup_throttle')
        .where('address_key', 'in', (eb) => eb.selectFrom('signup_throttle').select('address_key').where('last_queued_at', '<', cutoff).limit(limit))
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  },
  {
    // Batch jobs untouched for the period (finished, cancelled or abandoned), with their export files and import uploads and errors.
    name: 'batchJobs',
    deleteBatch: (db, cutoff, limit) => deleteExpiredBatchData(db, cutoff, limit),
  },
];

export interface RetentionOptions {
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
  const cutoff = rows[0]!.cutoff;
  const deleted: Record<string, number> = {};
  for (const deleter of options.deleters ?? RETENTION_DELETERS) {
    deleted[deleter.name] = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      const count = await deleter.deleteBatch(db, cutoff, options.batchSize);
      deleted[deleter.name]! += count;
      if (count < options.batchSize) break;
    }
    await options.onProgress?.({ ...deleted });
  }
  const summary: RetentionSummary = { cutoff: cutoff.toISOString(), deleted, durationMs: Math.round(performance.now() - started) };
  log.info({ retention: summary }, 'retention finished');
  return summary;
}
