import { sql } from 'kysely';
import { createStatementBatcher } from './batch.js';
import type { DataLayer } from './pool.js';

/** Most job ids one statement takes (a worker runs at most EMAIL_CONCURRENCY jobs at once). */
const SENT_EMAILS_BATCH_MAX = 500;

/**
 * `sent_emails`, the record that stops a second send of one job: checked before composing, written after the
 * SMTP server accepted the message. Concurrent jobs of one worker share the statements (DB_BATCHING): with
 * EMAIL_CONCURRENCY 50 that is a few statements and commits for many emails instead of two per email. Each job
 * still waits for its own row to be committed before it completes.
 */
export interface SentEmails {
  wasSent(jobId: string): Promise<boolean>;
  /** Records the send of `jobId`, with the Message-ID the accepted message carried. */
  record(jobId: string, messageId: string): Promise<void>;
}

export function createSentEmails(data: DataLayer): SentEmails {
  // Compiled once and run as named prepared statements: a worker runs them for every email it sends.
  const selectSent = data.prepared.compile(['jobIds'], (params: { jobIds: string[] }, db) =>
    db
      .selectFrom('sent_emails')
      .select('job_id')
      .where(sql<boolean>`job_id = any(${params.jobIds}::text[])`),
  );
  // Inserts only, with no row of another caller to wait for (a conflicting job id is skipped): no lock order to keep.
  const insertSent = data.prepared.compile(
    ['jobIds', 'messageIds'],
    (params: { jobIds: string[]; messageIds: string[] }) =>
      sql`insert into sent_emails (job_id, message_id) select * from unnest(${params.jobIds}::text[], ${params.messageIds}::text[])
          on conflict (job_id) do nothing`,
  );
  const wasSent = createStatementBatcher<string, boolean>(data, {
    maxBatch: SENT_EMAILS_BATCH_MAX,
    async run(jobIds) {
      const rows = await selectSent({ jobIds });
      const sent = new Set(rows.map((row) => row.job_id));
      return jobIds.map((jobId) => sent.has(jobId));
    },
  });
  const insert = createStatementBatcher<{ jobId: string; messageId: string }, undefined>(data, {
    maxBatch: SENT_EMAILS_BATCH_MAX,
    // One row per job id and statement (a retry of the same job could otherwise meet its own earlier call).
    keysOf: ({ jobId }) => [jobId],
    async run(items) {
      await insertSent({ jobIds: items.map((item) => item.jobId), messageIds: items.map((item) => item.messageId) });
      return items.map(() => undefined);
    },
  });
  return { wasSent, record: (jobId, messageId) => insert({ jobId, messageId }) };
}
