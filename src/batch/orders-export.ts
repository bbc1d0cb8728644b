import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Job } from 'bullmq';
import { sql } from 'kysely';
import type { Db, OrderStatus } from '../core/db.js';
import { ORDERS_EXPORT_JOB, type OrdersExportPayload } from './jobs.js';
import { assertCheckpointWritten, JobCancelledError, pauseBetweenChunks, runCancellable, throwIfAborted } from './chunks.js';
import { advanceCheckpoint, batchDb, insertChunk, loadOrCreateBatchJob, setBatchJobTotal, type BatchJobState } from './repository.js';

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

/** RFC 4180: a field with a comma, quote, CR or LF is quoted, its quotes doubled. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

export const EXPORT_CONTENT_TYPES: Readonly<Record<ExportFormat, string>> = {
  csv: 'text/csv; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
};

interface ExportRow {
  id: string;
  email: string;
  amount: string;
  currency: string;
  status: string;
  provider_ref: string;
  paid_at: string | null;
  created_at: string;
  updated_at: string;
  key_created_at: string;
}

function formatRows(rows: ExportRow[], format: ExportFormat): string {
  let out = '';
  if (format === 'csv') {
    for (const r of rows) {
      out += `${r.id},${csvField(r.email)},${r.amount},${csvField(r.currency)},${r.status},${csvField(r.provider_ref)},${r.paid_at ?? ''},${r.created_at},${r.updated_at}\r\n`;
    }
  } else {
    for (const r of rows) {
      // Amounts stay below 2^53 (see OrdersTable): a JSON number.
      out += `${JSON.stringify({ id: r.id, email: r.email, amount: Number(r.amount), currency: r.currency, status: r.status, providerRef: r.provider_ref, paidAt: r.paid_at, createdAt: r.created_at, updatedAt: r.updated_at })}\n`;
    }
  }
  return out;
}

// Timestamps formatted by PostgreSQL (UTC, milliseconds): identical on every run, and no Date objects per row.
const isoUtc = (column: string) => sql<string>`to_char(${sql.ref(column)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

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

export interface ExportChunk {
  data: Buffer;
  rows: number;
  /** The last key in this chunk (the previous one for an empty chunk). */
  last: ExportKey | null;
  /** No rows after this chunk. */
  final: boolean;
}

/**
 * The export as chunks of at most `chunkRows` orders, read by keyset
 * pagination on (created_at, id) from `after`: no OFFSET, no open cursor,
 * one short query per chunk. The CSV header goes in front of the first chunk
 * of a run that starts at the beginning.
 */
export async function* exportOrderChunks(
  db: Db,
  filter: OrdersExportFilter,
  options: { chunkRows: number; after: ExportKey | null },
): AsyncGenerator<ExportChunk> {
  let after = options.after;
  let header = after === null && filter.format === 'csv';
  for (;;) {
    const rows = (await filteredOrders(db, filter)
      .select([
        'id',
        'email',
        sql<string>`amount::text`.as('amount'),
        'currency',
        'status',
        'provider_ref',
        isoUtc('paid_at').as('paid_at'),
        isoUtc('created_at').as('created_at'),
        isoUtc('updated_at').as('updated_at'),
        sql<string>`created_at::text`.as('key_created_at'),
      ])
      .$if(after !== null, (qb) => qb.where(sql<boolean>`(created_at, id) > (${after!.createdAt}::timestamptz, ${after!.id}::uuid)`))
      .orderBy('created_at')
      .orderBy('id')
      .limit(options.chunkRows)
      .execute()) as ExportRow[];
    const lastRow = rows[rows.length - 1];
    if (lastRow) after = { createdAt: lastRow.key_created_at, id: lastRow.id };
    const text = (header ? CSV_HEADER : '') + formatRows(rows, filter.format);
    header = false;
    const final = rows.length < options.chunkRows;
    yield { data: Buffer.from(text, 'utf8'), rows: rows.length, last: after, final };
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
    let { chunksDone, rowsDone, bytesDone } = state;
    const after = state.cursor ? { createdAt: state.cursor.createdAt, id: state.cursor.id } : null;
    await job.updateProgress({ done: rowsDone, total });

    for await (const chunk of exportOrderChunks(deps.db, filter, { chunkRows: deps.chunkRows, after })) {
      throwIfAborted(signal);
      const rows = rowsDone + chunk.rows;
      const bytes = bytesDone + chunk.data.length;
      await bdb.transaction().execute(async (trx) => {
        if (chunk.data.length > 0) await insertChunk(trx, 'batch_export_chunks', { jobId, seq: chunksDone, data: chunk.data });
        const outcome = await advanceCheckpoint(trx, {
          jobId,
          expectedChunks: chunksDone,
          cursor: chunk.last ? { createdAt: chunk.last.createdAt, id: chunk.last.id } : null,
          rows,
          bytes,
          finished: chunk.final,
        });
        assertCheckpointWritten(outcome, jobId);
      });
      chunksDone += 1;
      rowsDone = rows;
      bytesDone = bytes;
      await job.updateProgress({ done: rowsDone, total });
      if (!chunk.final) await pauseBetweenChunks(deps.chunkPauseMs, signal);
    }
    return { rows: rowsDone, bytes: bytesDone, format: filter.format };
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
