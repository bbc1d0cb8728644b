import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { TObject } from 'typebox';
import type { JobNameOf, PayloadOf, QueueDefinition } from '../core/job-registry.js';
import { activeTraceContext, type TraceContext } from '../core/tracing.js';
import type { Database } from './schema.js';
import { createBatcher } from './batcher.js';

/**
 * The one outbox API. A job is written to the `outbox` table in the transaction (or the one statement) that makes
 * it due, and reaches Redis only after that commit (src/outbox: publish-after-commit and the relay). This module
 * alone writes outbox rows and spells their BullMQ job id; every writer is typed by the job registry
 * (core/job-registry.ts), so only a declared queue, job name and matching payload fit.
 */

/** An outbox row as producers and the relay hand it on. */
export interface OutboxRow {
  id: string;
  queue: string;
  job_name: string;
  payload: unknown;
  /** Read by the relay and republish (the request that wrote the row is long gone); absent on freshly written rows. */
  trace_context?: TraceContext | null;
}

/**
 * A declared job, bound to its queue definition: what a writer names. `outboxJob(emailQueue, EMAIL_VERIFICATION_JOB)`
 * is an OutboxJob of that job's payload type, so a statement can take "a job whose payload is {userId}" without
 * importing the capability that declares it.
 */
export interface OutboxJob<Payload> {
  readonly queue: QueueDefinition;
  readonly jobName: string;
  /** Type only: the payload this job carries. */
  readonly payloadType?: Payload;
}

export function outboxJob<D extends QueueDefinition, N extends JobNameOf<D>>(queue: D, jobName: N): OutboxJob<PayloadOf<D, N>> {
  return { queue, jobName };
}

/** The columns a writer gets back: what publish-after-commit needs. */
export const OUTBOX_RETURNING = ['id', 'queue', 'job_name', 'payload'] as const;

const JOB_ID_PREFIX = 'outbox-';

/** BullMQ job ids may not contain `:` nor be all digits; this one is stable per outbox row, so re-publishing is a no-op. */
export function outboxJobId(outboxId: string): string {
  return `${JOB_ID_PREFIX}${outboxId}`;
}

/** outboxJobId in SQL, for a statement that joins a row's job id (e.g. sent_emails.job_id) to the outbox id. */
export function outboxJobIdSql(outboxIdExpression: RawBuilder<unknown>): RawBuilder<string> {
  return sql<string>`(${JOB_ID_PREFIX}::text || ${outboxIdExpression})`;
}

/**
 * The outbox columns of one job. `trace_context` is the active trace (null when tracing is off), so a relay
 * publish joins the request's trace.
 */
export function outboxValues<Payload>(job: OutboxJob<Payload>, data: Payload) {
  const traceContext = activeTraceContext();
  return {
    queue: job.queue.name,
    job_name: job.jobName,
    payload: JSON.stringify(data),
    trace_context: traceContext === null ? null : JSON.stringify(traceContext),
  };
}

/** Records jobs in the caller's transaction (one statement); they reach Redis only after commit (`publishAfterCommit`). */
export async function insertOutboxRows<Payload>(
  trx: Kysely<Database>,
  job: OutboxJob<Payload>,
  payloads: readonly Payload[],
): Promise<OutboxRow[]> {
  if (payloads.length === 0) return [];
  return trx
    .insertInto('outbox')
    .values(payloads.map((data) => outboxValues(job, data)))
    .returning(OUTBOX_RETURNING)
    .execute();
}

/** One job in the caller's transaction: insertOutboxRows for a single payload. */
export async function insertOutboxRow<Payload>(trx: Kysely<Database>, job: OutboxJob<Payload>, data: Payload): Promise<OutboxRow> {
  const [row] = await insertOutboxRows(trx, job, [data]);
  return row;
}

/** One SQL expression per payload field: a payload built inside a statement, from values that exist only there. */
export type PayloadSql<Payload> = { readonly [K in keyof Payload]-?: RawBuilder<unknown> };

/**
 * `jsonb_build_object(...)` of a job's payload, its keys taken from the job's declared payload schema: a field the
 * schema declares and the statement leaves out, or one it does not declare, fails when the statement is built
 * (test/db/outbox.test.ts checks what the built payloads hold against the schemas).
 */
export function payloadSql<Payload>(job: OutboxJob<Payload>, fields: PayloadSql<Payload>): RawBuilder<unknown> {
  const { queue, jobName } = job;
  const declaration = queue.jobs[jobName];
  if (!declaration) throw new Error(`outbox: ${queue.name} declares no job ${jobName}`);
  const schema = declaration.payload as Partial<TObject>;
  const declared = Object.keys(schema.properties ?? {}).sort();
  const given = Object.keys(fields).sort();
  if (declared.join() !== given.join()) {
    throw new Error(
      `outbox payload of ${queue.name}/${jobName}: fields ${given.join(', ')} where the schema declares ${declared.join(', ')}`,
    );
  }
  const pairs = declared.map((key) => sql`${key}::text, ${(fields as Record<string, RawBuilder<unknown>>)[key]}`);
  return sql`jsonb_build_object(${sql.join(pairs)})`;
}

/**
 * The SQL a one-statement producer embeds as a CTE: inserts one job per row of `from` (a FROM clause, with any
 * WHERE) and returns OutboxRow's columns. The payload is built in SQL (payloadSql), typed by the registry.
 */
export function outboxInsertSql<Payload>(
  job: OutboxJob<Payload>,
  rows: { payload: PayloadSql<Payload>; traceContext: RawBuilder<unknown>; from: RawBuilder<unknown> },
): RawBuilder<OutboxRow> {
  return sql<OutboxRow>`insert into outbox (queue, job_name, payload, trace_context)
            select ${job.queue.name}::text, ${job.jobName}::text, ${payloadSql(job, rows.payload)}, ${rows.traceContext}
            from ${rows.from}
            returning id, queue, job_name, payload`;
}

/** Sends a batch of freshly committed rows on (publish-after-commit: to Redis): per row, in order, an Error or nothing. */
export type SendOutboxRows = (rows: OutboxRow[]) => Promise<(Error | undefined)[]>;

/**
 * Per row: resolves once `send` took it, rejects with the row's Error. The rows handed in during one event-loop
 * turn (and while two earlier batches are still being sent) go to `send` together, at most `maxBatch` at a time,
 * so concurrent requests share one write. A row not yet sent after `deadlineMs` is given up at once, so a sender
 * that is slow to answer cannot pile rows up here; the relay publishes what this gave up.
 */
export function createOutboxRowSender(
  send: SendOutboxRows,
  options: { maxBatch: number; deadlineMs: number },
): (row: OutboxRow) => Promise<void> {
  const { maxBatch, deadlineMs } = options;
  const batched = createBatcher<OutboxRow, Error | undefined>({
    maxBatch,
    maxInFlight: 2,
    maxWait: { ms: deadlineMs, error: () => new Error(`not sent to Redis within ${deadlineMs} ms`) },
    run: send,
  });
  return async (row) => {
    const failure = await batched(row);
    if (failure !== undefined) throw failure;
  };
}
