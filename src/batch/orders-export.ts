import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Job } from 'bullmq';
import { sql, type RawBuilder } from 'kysely';
import type { Db, OrderStatus } from '../db/schema.js';
import { csvSql } from './csv-sql.js';
import { ORDERS_EXPORT_JOB, type OrdersExportPayload } from './jobs.js';
import { checkpointRefusedError, JobCancelledError, runCancellable, runCheckpointed } from './chunks.js';
import { batchDb, checkpointRefusal, loadOrCreateBatchJob, setBatchJobTotal, type BatchJobState } from './repository.js';

export type ExportFormat = OrdersExportPayload['format'];

/** What an export covers: created_at in [from, to), at or before `until` (the moment the export started), one status or all. */
export interface OrdersExportFilter {
  from?: string;
  to?: string;
  status?: OrderStatus;
  format: ExportFormat;
  /** Pinned at the first run, so orders created while it runs (or between a kill and the resume) are not in the file. */
  until: string;
}

/** Keyset position: the last (created_at, id) written. created_at as PostgreSQL's own text, so no microsecond is lost. */
export interface ExportKey {
  createdAt: string;
  id: string;
}

export const EXPORT_COLUMNS = ['id', 'email', 'amount', 'currency', 'status', 'providerRef', 'paidAt', 'createdAt', 'updatedAt'] as const;
const CSV_HEADER = `${EXPORT_COLUMNS.join(',')}\r\n`;

export const EXPORT_CONTENT_TYPES: Readonly<Record<ExportFormat, string>> = {
  csv: 'text/csv; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
};

// Timestamps formatted by PostgreSQL (UTC, milliseconds): identical on every run, and no Date objects per row.
const isoUtc = (column: RawBuilder<unknown>) => sql<string>`to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** A JSON string as JSON.stringify writes it: PostgreSQL escapes the same characters the same way (", \, \b \f \n \r \t, \u00xx). */
const jsonSql = (value: RawBuilder<unknown>) => sql<string>`to_json(${value})::text`;

const col = (name: string) => sql.ref(`page.${name}`);

/** One order as its line of the file, built by PostgreSQL (rows never pass through this process). */
const LINE_SQL: Readonly<Record<ExportFormat, RawBuilder<string>>> = {
  csv: sql<string>`${col('id')}::text || ',' || ${csvSql(col('email'))} || ',' || ${col('amount')}::text || ',' || ${csvSql(col('currency'))}
    || ',' || ${col('status')} || ',' || ${csvSql(col('provider_ref'))} || ',' || coalesce(${isoUtc(col('paid_at'))}, '')
    || ',' || ${isoUtc(col('created_at'))} || ',' || ${isoUtc(col('updated_at'))} || ${'\r\n'}::text`,
  // Amounts stay below 2^53 (see OrdersTable): a JSON number, written as bigint's text.
  ndjson: sql<string>`'{"id":"' || ${col('id')}::text || '","email":' || ${jsonSql(col('email'))} || ',"amount":' || ${col('amount')}::text
    || ',"currency":' || ${jsonSql(col('currency'))} || ',"status":' || ${jsonSql(col('status'))} || ',"providerRef":' || ${jsonSql(col('provider_ref'))}
    || ',"paidAt":' || coalesce('"' || ${isoUtc(col('paid_at'))} || '"', 'null') || ',"createdAt":"' || ${isoUtc(col('created_at'))}
    || '","updatedAt":"' || ${isoUtc(col('updated_at'))} || '"}' || ${'\n'}::text`,
};

function filteredOrders(db: Db, filter: OrdersExportFilter) {
  return db
    .selectFrom('orders')
    .where(sql<boolean>`created_at <= ${filter.until}::timestamptz`)
    .$if(filter.from !== undefined, (qb) => qb.where(sql<boolean>`created_at >= ${filter.from!}::timestamptz`))
    .$if(filter.to !== undefined, (qb) => qb.where(sql<boolean>`created_at < ${filter.to!}::timestamptz`))
    .$if(filter.status !== undefined, (qb) => qb.where('status', '=', filter.status!));
}

export async function countOrdersToExport(db: Db, filter: OrdersExportFilter): Promise<number> {
  const row = await filteredOrders(db, filter)
    .select(sql<string>`count(*)`.as('count'))
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/** The database's clock, as text: the export's `until`. */
export async function databaseNow(db: Db): Promise<string> {
  const row = await sql<{ now: string }>`SELECT now()::text AS now`.execute(db);
  return row.rows[0].now;
}

/**
 * The next keyset page (created_at, id) after `after`, raw columns only, by
 * the (created_at, id) index: no OFFSET, no open cursor. Ordered by the
 * table's columns, not by formatted text, so the keyset condition and the
 * order agree to the microsecond.
 */
function nextPage(db: Db, filter: OrdersExportFilter, after: ExportKey | null, chunkRows: number) {
  return filteredOrders(db, filter)
    .select(['id', 'email', 'amount', 'currency', 'status', 'provider_ref', 'paid_at', 'created_at', 'updated_at'])
    .$if(after !== null, (qb) => qb.where(sql<boolean>`(created_at, id) > (${after!.createdAt}::timestamptz, ${after!.id}::uuid)`))
    .orderBy('orders.created_at')
    .orderBy('orders.id')
    .limit(chunkRows);
}

/**
 * One chunk as PostgreSQL builds it: the page's lines joined in key order
 * (the CSV header in front of a run's first chunk), as UTF-8 bytes, with the
 * page's row count and last key, in CTEs the job's checkpoint statement reuses.
 */
function chunkCtes(db: Db, filter: OrdersExportFilter, after: ExportKey | null, chunkRows: number, header: boolean) {
  return sql`page AS (${nextPage(db, filter, after, chunkRows)}),
    chunk AS (
      SELECT count(*)::int AS rows,
             convert_to(${header ? CSV_HEADER : ''}::text || coalesce(string_agg(${LINE_SQL[filter.format]}, '' ORDER BY page.created_at, page.id), ''), 'UTF8') AS data
        FROM page
    ),
    last_key AS (SELECT created_at::text AS created_at, id::text AS id FROM page ORDER BY page.created_at DESC, page.id DESC LIMIT 1)`;
}

export interface ExportChunk {
  data: Buffer;
  rows: number;
  /** The last key in this chunk (the previous one for an empty chunk). */
  last: ExportKey | null;
  /** No rows after this chunk. */
  final: boolean;
}

/**
 * The export as chunks of at most `chunkRows` orders from `after`, each
 * built by one query (see chunkCtes): only a chunk's bytes reach this
 * process, never its rows.
 */
export async function* exportOrderChunks(
  db: Db,
  filter: OrdersExportFilter,
  options: { chunkRows: number; after: ExportKey | null },
): AsyncGenerator<ExportChunk> {
  let after = options.after;
  let header = after === null && filter.format === 'csv';
  for (;;) {
    const result = await sql<{ rows: number; data: Buffer; created_at: string | null; id: string | null }>`
      WITH ${chunkCtes(db, filter, after, options.chunkRows, header)}
      SELECT chunk.rows, chunk.data, last_key.created_at, last_key.id FROM chunk LEFT JOIN last_key ON true`.execute(db);
    const chunk = result.rows[0];
    if (chunk.created_at !== null && chunk.id !== null) after = { createdAt: chunk.created_at, id: chunk.id };
    header = false;
    const final = chunk.rows < options.chunkRows;
    yield { data: chunk.data, rows: chunk.rows, last: after, final };
    if (final) return;
  }
}

export interface ExportSummary {
  rows: number;
  bytes: number;
  format: ExportFormat;
}

export interface ExportJobDeps {
  db: Db;
  chunkRows: number;
  chunkPauseMs: number;
}

function filterFromParams(params: Record<string, unknown>): OrdersExportFilter {
  return params as unknown as OrdersExportFilter;
}

interface StoredCheckpoint {
  rowsDone: number;
  bytesDone: number;
  cursor: ExportKey | null;
  finished: boolean;
}

/**
 * One chunk of the job in ONE statement: PostgreSQL reads the next page,
 * builds its bytes, advances the checkpoint (last key, rows, bytes; finished
 * when the page came up short) and stores the chunk, so the chunk and its
 * checkpoint commit together and no row passes through this process. The
 * checkpoint moves only if nobody asked to cancel and no other worker moved
 * the job on since `chunksDone`; the chunk is stored only if it moved.
 * Returns the new checkpoint, or undefined when it was refused.
 */
async function storeNextChunk(
  db: Db,
  filter: OrdersExportFilter,
  at: { jobId: string; chunksDone: number; after: ExportKey | null; chunkRows: number },
): Promise<StoredCheckpoint | undefined> {
  const header = at.chunksDone === 0 && filter.format === 'csv';
  const result = await sql<{ rows_done: string; bytes_done: string; cursor: Record<string, string> | null; finished: boolean }>`
    WITH ${chunkCtes(db, filter, at.after, at.chunkRows, header)},
    checkpoint AS (
      UPDATE batch_jobs
         SET cursor = coalesce((SELECT jsonb_build_object('createdAt', last_key.created_at, 'id', last_key.id) FROM last_key), batch_jobs.cursor),
             chunks_done = batch_jobs.chunks_done + 1,
             rows_done = batch_jobs.rows_done + chunk.rows,
             bytes_done = batch_jobs.bytes_done + octet_length(chunk.data),
             finished_at = CASE WHEN chunk.rows < ${at.chunkRows}::int THEN now() END,
             updated_at = now()
        FROM chunk
       WHERE batch_jobs.job_id = ${at.jobId}
         AND batch_jobs.chunks_done = ${at.chunksDone}::int
         AND batch_jobs.cancel_requested_at IS NULL
         AND batch_jobs.finished_at IS NULL
      RETURNING batch_jobs.rows_done, batch_jobs.bytes_done, batch_jobs.cursor, batch_jobs.finished_at IS NOT NULL AS finished
    ),
    stored AS (
      INSERT INTO batch_export_chunks (job_id, seq, data)
      SELECT ${at.jobId}, ${at.chunksDone}::int, chunk.data FROM chunk, checkpoint WHERE octet_length(chunk.data) > 0
    )
    SELECT rows_done, bytes_done, cursor, finished FROM checkpoint`.execute(db);
  const row = result.rows[0];
  if (!row) return undefined;
  return {
    rowsDone: Number(row.rows_done),
    bytesDone: Number(row.bytes_done),
    cursor: row.cursor ? { createdAt: row.cursor.createdAt, id: row.cursor.id } : null,
    finished: row.finished,
  };
}

/**
 * The `orders-export` job: each chunk and its checkpoint (last key, rows,
 * bytes) in one transaction, so a worker killed at any moment resumes right
 * after the last committed chunk and the file comes out byte for byte as an
 * uninterrupted run would write it.
 */
export async function processOrdersExportJob(
  deps: ExportJobDeps,
  payload: OrdersExportPayload,
  job: Job,
  signal: AbortSignal | undefined,
): Promise<ExportSummary> {
  const bdb = batchDb(deps.db);
  const jobId = job.id!;
  return runCancellable(bdb, jobId, async () => {
    let state: BatchJobState = await loadOrCreateBatchJob(bdb, { jobId, kind: ORDERS_EXPORT_JOB, params: payload });
    if (state.cancelRequested || state.cancelled) throw new JobCancelledError();
    const format = (state.params.format as ExportFormat | undefined) ?? payload.format;
    if (state.finished) return { rows: state.rowsDone, bytes: state.bytesDone, format };

    if (typeof state.params.until !== 'string' || state.total === null) {
      const filter: OrdersExportFilter = { ...payload, until: await databaseNow(deps.db) };
      const total = await countOrdersToExport(deps.db, filter);
      await setBatchJobTotal(bdb, jobId, total, { ...filter });
      state = { ...state, params: { ...filter }, total };
    }
    const filter = filterFromParams(state.params);
    const total = state.total;
    let { chunksDone } = state;
    let after: ExportKey | null = state.cursor ? { createdAt: state.cursor.createdAt, id: state.cursor.id } : null;
    const last = await runCheckpointed(job, signal, {
      done: state.rowsDone,
      total,
      pauseMs: deps.chunkPauseMs,
      commitNextChunk: async () => {
        const checkpoint = await storeNextChunk(deps.db, filter, { jobId, chunksDone, after, chunkRows: deps.chunkRows });
        if (!checkpoint) throw checkpointRefusedError(await checkpointRefusal(bdb, jobId), jobId);
        chunksDone += 1;
        after = checkpoint.cursor;
        return { ...checkpoint, done: checkpoint.rowsDone, final: checkpoint.finished };
      },
    });
    return { rows: last.rowsDone, bytes: last.bytesDone, format: filter.format };
  });
}

/**
 * The same export written to a stream in this process (`npm run export`):
 * same query, same bytes, with back-pressure, no checkpoint.
 */
export async function writeOrdersExport(
  db: Db,
  params: OrdersExportPayload,
  out: Writable,
  options: { chunkRows: number; onStart?: (total: number) => void; onProgress?: (done: number) => void },
): Promise<{ rows: number; bytes: number; durationMs: number }> {
  const started = performance.now();
  const filter: OrdersExportFilter = { ...params, until: await databaseNow(db) };
  options.onStart?.(await countOrdersToExport(db, filter));
  let rows = 0;
  let bytes = 0;
  for await (const chunk of exportOrderChunks(db, filter, { chunkRows: options.chunkRows, after: null })) {
    rows += chunk.rows;
    bytes += chunk.data.length;
    if (chunk.data.length > 0 && !out.write(chunk.data)) await once(out, 'drain');
    options.onProgress?.(rows);
  }
  return { rows, bytes, durationMs: Math.round(performance.now() - started) };
}
