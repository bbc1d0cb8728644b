import { sql, type ColumnType, type Generated, type Kysely, type Transaction } from 'kysely';
import type { Database, Db } from '../db/schema.js';
import { csvSql } from './csv-sql.js';

export interface BatchJobsTable {
  job_id: string;
  kind: string;
  params: ColumnType<Record<string, unknown>, string | undefined, string>;
  cursor: ColumnType<Record<string, string> | null, string | null | undefined, string | null>;
  chunks_done: Generated<number>;
  // bigint columns arrive as strings
  rows_done: ColumnType<string, number | undefined, number>;
  bytes_done: ColumnType<string, number | undefined, number>;
  total: ColumnType<string | null, number | null | undefined, number | null>;
  counts: ColumnType<Record<string, number>, string | undefined, string>;
  cancel_requested_at: Date | null;
  cancelled_at: Date | null;
  finished_at: Date | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface BatchChunksTable {
  job_id: string;
  seq: number;
  data: Buffer;
}

export interface BatchImportErrorsTable {
  job_id: string;
  line: ColumnType<string, number, number>;
  reason: string;
}

export interface TrackingLinkBackfillsTable {
  order_id: string;
  outbox_id: string;
  job_id: string;
  queued_at: Generated<Date>;
}

/** The tables of migrations/005_batch.sql, added to errand's Database type where batch code needs them. */
export type BatchTables = {
  batch_jobs: BatchJobsTable;
  batch_export_chunks: BatchChunksTable;
  batch_import_chunks: BatchChunksTable;
  batch_import_errors: BatchImportErrorsTable;
  tracking_link_backfills: TrackingLinkBackfillsTable;
};

export type BatchDb = Kysely<Database & BatchTables>;
export type BatchTrx = Transaction<Database & BatchTables>;

export function batchDb(db: Db): BatchDb {
  return db.withTables<BatchTables>();
}

export function batchTrx(trx: Transaction<Database>): BatchTrx {
  return trx.withTables<BatchTables>();
}

export interface BatchJobState {
  jobId: string;
  kind: string;
  params: Record<string, unknown>;
  cursor: Record<string, string> | null;
  chunksDone: number;
  rowsDone: number;
  bytesDone: number;
  total: number | null;
  counts: Record<string, number>;
  cancelRequested: boolean;
  cancelled: boolean;
  finished: boolean;
}

function toState(row: {
  job_id: string;
  kind: string;
  params: Record<string, unknown>;
  cursor: Record<string, string> | null;
  chunks_done: number;
  rows_done: string;
  bytes_done: string;
  total: string | null;
  counts: Record<string, number>;
  cancel_requested_at: Date | null;
  cancelled_at: Date | null;
  finished_at: Date | null;
}): BatchJobState {
  return {
    jobId: row.job_id,
    kind: row.kind,
    params: row.params,
    cursor: row.cursor,
    chunksDone: row.chunks_done,
    rowsDone: Number(row.rows_done),
    bytesDone: Number(row.bytes_done),
    total: row.total === null ? null : Number(row.total),
    counts: row.counts,
    cancelRequested: row.cancel_requested_at !== null,
    cancelled: row.cancelled_at !== null,
    finished: row.finished_at !== null,
  };
}

const STATE_COLUMNS = [
  'job_id',
  'kind',
  'params',
  'cursor',
  'chunks_done',
  'rows_done',
  'bytes_done',
  'total',
  'counts',
  'cancel_requested_at',
  'cancelled_at',
  'finished_at',
] as const;

export async function findBatchJob(db: BatchDb | BatchTrx, jobId: string): Promise<BatchJobState | undefined> {
  const row = await db.selectFrom('batch_jobs').select(STATE_COLUMNS).where('job_id', '=', jobId).executeTakeFirst();
  return row ? toState(row) : undefined;
}

/** Records a batch job (from its route, in the outbox transaction); a second call for the same id changes nothing. */
export async function insertBatchJob(
  db: BatchDb | BatchTrx,
  job: { jobId: string; kind: string; params: Record<string, unknown>; total?: number | null },
): Promise<void> {
  await db
    .insertInto('batch_jobs')
    .values({ job_id: job.jobId, kind: job.kind, params: JSON.stringify(job.params), total: job.total ?? null })
    .onConflict((oc) => oc.column('job_id').doNothing())
    .execute();
}

/** The job's row, created on first run when the job was added without one (e.g. from Bull Board or a script). */
export async function loadOrCreateBatchJob(
  db: BatchDb,
  job: { jobId: string; kind: string; params: Record<string, unknown> },
): Promise<BatchJobState> {
  await insertBatchJob(db, job);
  const state = await findBatchJob(db, job.jobId);
  if (!state) throw new Error(`batch job ${job.jobId} vanished`);
  if (state.kind !== job.kind) throw new Error(`batch job ${job.jobId} is a ${state.kind}, not a ${job.kind}`);
  return state;
}

export async function setBatchJobTotal(db: BatchDb, jobId: string, total: number, params?: Record<string, unknown>): Promise<void> {
  await db
    .updateTable('batch_jobs')
    .set({ total, ...(params ? { params: JSON.stringify(params) } : {}), updated_at: sql<Date>`now()` })
    .where('job_id', '=', jobId)
    .execute();
}

export interface CheckpointAdvance {
  jobId: string;
  /** chunks_done as this worker last read it: a checkpoint written meanwhile by anyone else refuses this one. */
  expectedChunks: number;
  cursor: Record<string, string> | null;
  rows: number;
  bytes: number;
  counts?: Record<string, number>;
  finished: boolean;
}

export type CheckpointOutcome = 'written' | 'cancel-requested' | 'taken-over';

/**
 * Writes the checkpoint in the caller's chunk transaction. It commits only if
 * nobody asked to cancel and no other worker moved the job on; otherwise the
 * caller rolls the chunk back (throw) and acts on the outcome.
 */
export async function advanceCheckpoint(trx: BatchTrx, next: CheckpointAdvance): Promise<CheckpointOutcome> {
  const updated = await trx
    .updateTable('batch_jobs')
    .set({
      cursor: next.cursor === null ? null : JSON.stringify(next.cursor),
      chunks_done: sql<number>`chunks_done + 1`,
      rows_done: next.rows,
      bytes_done: next.bytes,
      ...(next.counts ? { counts: JSON.stringify(next.counts) } : {}),
      ...(next.finished ? { finished_at: sql<Date>`now()` } : {}),
      updated_at: sql<Date>`now()`,
    })
    .where('job_id', '=', next.jobId)
    .where('chunks_done', '=', next.expectedChunks)
    .where('cancel_requested_at', 'is', null)
    .where('finished_at', 'is', null)
    .returning('job_id')
    .executeTakeFirst();
  if (updated) return 'written';
  return checkpointRefusal(trx, next.jobId);
}

/** Why a checkpoint update matched no row: a cancel was asked for, or another worker moved the job on (or finished it). */
export async function checkpointRefusal(db: BatchDb | BatchTrx, jobId: string): Promise<Exclude<CheckpointOutcome, 'written'>> {
  const row = await db.selectFrom('batch_jobs').select(['cancel_requested_at']).where('job_id', '=', jobId).executeTakeFirst();
  return row?.cancel_requested_at ? 'cancel-requested' : 'taken-over';
}

/** A cancelled job keeps its row (marked) but none of its output: export chunks, upload, error rows. */
export async function discardBatchOutput(db: BatchDb, jobId: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom('batch_export_chunks').where('job_id', '=', jobId).execute();
    await trx.deleteFrom('batch_import_chunks').where('job_id', '=', jobId).execute();
    await trx.deleteFrom('batch_import_errors').where('job_id', '=', jobId).execute();
    await trx
      .updateTable('batch_jobs')
      .set({
        cancelled_at: sql<Date>`coalesce(cancelled_at, now())`,
        cancel_requested_at: sql<Date>`coalesce(cancel_requested_at, now())`,
        updated_at: sql<Date>`now()`,
      })
      .where('job_id', '=', jobId)
      .execute();
  });
}

/** Removes a job that never ran (a waiting job cancelled) with everything it stored. */
export async function deleteBatchJob(db: BatchDb, jobId: string): Promise<void> {
  await db.deleteFrom('batch_jobs').where('job_id', '=', jobId).execute();
}

/** Streams stored chunks in order, one query per chunk, so memory stays at one chunk whatever the file size. */
export async function* readChunks(
  db: BatchDb,
  table: 'batch_export_chunks' | 'batch_import_chunks',
  jobId: string,
  fromSeq = 0,
): AsyncGenerator<Buffer> {
  for (let seq = fromSeq; ; seq += 1) {
    const row = await db.selectFrom(table).select('data').where('job_id', '=', jobId).where('seq', '=', seq).executeTakeFirst();
    if (!row) return;
    yield row.data;
  }
}

export async function insertChunk(
  trx: BatchTrx,
  table: 'batch_export_chunks' | 'batch_import_chunks',
  chunk: { jobId: string; seq: number; data: Buffer },
): Promise<void> {
  await trx.insertInto(table).values({ job_id: chunk.jobId, seq: chunk.seq, data: chunk.data }).execute();
}

/**
 * The rejected import rows as the errors file's lines (`line,reason` CRLF), in line order, one page of text
 * at a time (keyset on line). PostgreSQL writes each reason's cell with csvSql, the export's expression.
 */
export async function* readImportErrorsCsv(db: BatchDb, jobId: string, pageSize = 1000): AsyncGenerator<string> {
  let after = 0;
  for (;;) {
    const page = db
      .selectFrom('batch_import_errors')
      .select(['line', 'reason'])
      .where('job_id', '=', jobId)
      .where('line', '>', String(after))
      .orderBy('line')
      .limit(pageSize);
    const result = await sql<{ rows: number; last: string | null; text: string | null }>`
      WITH page AS (${page})
      SELECT count(*)::int AS rows, max(page.line)::text AS last,
             string_agg(page.line::text || ',' || ${csvSql(sql.ref('page.reason'))} || ${'\r\n'}::text, '' ORDER BY page.line) AS text
        FROM page`.execute(db);
    const chunk = result.rows[0];
    if (chunk.rows === 0 || chunk.text === null || chunk.last === null) return;
    yield chunk.text;
    after = Number(chunk.last);
    if (chunk.rows < pageSize) return;
  }
}

/**
 * Retention: deletes batch jobs whose row has not moved since `before`
 * (finished, cancelled, or failed for good — every checkpoint bumps
 * updated_at), with their export files, uploads and error rows (cascade), at
 * most `batchSize` jobs per statement until none is left. Returns how many
 * jobs went.
 */
export async function deleteExpiredBatchData(db: Db, before: Date, batchSize = 100): Promise<number> {
  const bdb = batchDb(db);
  let deleted = 0;
  for (;;) {
    const result = await bdb
      .deleteFrom('batch_jobs')
      .where('job_id', 'in', (qb) => qb.selectFrom('batch_jobs').select('job_id').where('updated_at', '<', before).limit(batchSize))
      .executeTakeFirst();
    const count = Number(result.numDeletedRows);
    deleted += count;
    if (count < batchSize) return deleted;
  }
}
