import { sql } from 'kysely';
import { createStatementBatcher, type Db } from '../core/db.js';

/** Most job ids one statement takes (a worker runs at most EMAIL_CONCURRENCY jobs at once). */
const SENT_EMAILS_BATCH_MAX = 500;

/**
 * `sent_emails`, the record that stops a second send of one job: checked before composing, written after the
 * SMTP server accepted the message. Concurrent jobs of one worker share the statements (createStatementBatcher): with
 * EMAIL_CONCURRENCY 50 that is a few statements and commits for many emails instead of two per email. Each job
 * still waits for its own row to be committed before it completes.
 */
export interface SentEmails {
  wasSent(jobId: string): Promise<boolean>;
  record(jobId: string): Promise<void>;
}

export function createSentEmails(db: Db): SentEmails {
  const wasSent = createStatementBatcher<string, boolean>({
    maxBatch: SENT_EMAILS_BATCH_MAX,
    async run(jobIds) {
      const rows = await db
        .selectFrom('sent_emails')
        .select('job_id')
        .where(sql<boolean>`job_id = any(${jobIds}::text[])`)
        .execute();
      const sent = new Set(rows.map((row) => row.job_id));
      return jobIds.map((jobId) => sent.has(jobId));
    },
  });
  const record = createStatementBatcher<string, undefined>({
    maxBatch: SENT_EMAILS_BATCH_MAX,
    // One row per job id and statement (a retry of the same job could otherwise meet its own earlier call).
    keysOf: (jobId) => [jobId],
    async run(jobIds) {
      await sql`insert into sent_emails (job_id) select unnest(${jobIds}::text[]) on conflict (job_id) do nothing`.execute(db);
      return jobIds.map(() => undefined);
    },
  });
  return { wasSent, record };
}
