import { sql } from 'kysely';
import type { Db } from './schema.js';
import { deleteOldRows } from './old-rows.js';
import { createBatcher } from './batcher.js';

// The cancellation columns of migration 009 (outbox.cancelled_at, cancelled_jobs) are reached through `sql`.

/** A WHERE condition on `outbox`: the row's job was not cancelled (POST /admin/jobs/:queue/:id/cancel). */
export const notCancelled = sql<boolean>`outbox.cancelled_at is null`;

/** The outbox row id behind a job id `outbox-<id>` (see `outboxJobId`), or undefined for any other job id. */
export function outboxIdOf(jobId: string): string | undefined {
  return /^outbox-([1-9][0-9]{0,18})$/.exec(jobId)?.[1];
}

/**
 * Records, durably and before the job leaves Redis, that `queue`'s job `jobId` is cancelled: the relay and the
 * re-publish after a reconnect never add its outbox row again, and a worker fails the job if it still arrives.
 * Its row is marked published too (the job was in Redis), so retention removes it in time.
 */
export async function recordCancellation(db: Db, queue: string, jobId: string): Promise<void> {
  const outboxId = outboxIdOf(jobId);
  await db.transaction().execute(async (trx) => {
    await sql`insert into cancelled_jobs (queue, job_id) values (${queue}, ${jobId}) on conflict do nothing`.execute(trx);
    if (outboxId !== undefined) {
      await sql`update outbox set cancelled_at = coalesce(cancelled_at, now()), published_at = coalesce(published_at, now())
        where id = ${outboxId}::bigint and queue = ${queue}`.execute(trx);
    }
  });
}

/** Undoes `recordCancellation` when the job could not be cancelled after all (it was already running). */
export async function forgetCancellation(db: Db, queue: string, jobId: string): Promise<void> {
  const outboxId = outboxIdOf(jobId);
  await db.transaction().execute(async (trx) => {
    await sql`delete from cancelled_jobs where queue = ${queue} and job_id = ${jobId}`.execute(trx);
    if (outboxId !== undefined) {
      await sql`update outbox set cancelled_at = null where id = ${outboxId}::bigint and queue = ${queue}`.execute(trx);
    }
  });
}

/**
 * Whether a job is cancelled, asked by workers before each job runs. Concurrent questions go as one indexed
 * read (`= any`), so a busy worker pays one statement per batch, not per job.
 */
export function cancelledJobsChecker(db: Db, queue: string): (jobId: string) => Promise<boolean> {
  return createBatcher<string, boolean>({
    maxBatch: 500,
    maxInFlight: 2,
    async run(jobIds) {
      const { rows } = await sql<{ job_id: string }>`select job_id from cancelled_jobs
        where queue = ${queue} and job_id = any(${jobIds}::text[])`.execute(db);
      const cancelled = new Set(rows.map((row) => row.job_id));
      return jobIds.map((jobId) => cancelled.has(jobId));
    },
  });
}

/**
 * Retention: deletes at most `limit` cancel markers recorded before `before`. Returns how many it deleted. The table
 * is small (admin cancels) and not indexed on `cancelled_at`: a scan that stops after `limit` rows.
 */
export async function deleteOldCancellations(db: Db, before: Date, limit: number): Promise<number> {
  return deleteOldRows(db, 'cancelled_jobs', ['queue', 'job_id'], sql<boolean>`cancelled_at < ${before}`, limit);
}
