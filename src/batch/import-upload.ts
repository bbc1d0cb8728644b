import type { Readable } from 'node:stream';
import { parse } from 'csv-parse';
import { enqueue, publishAfterCommit, type OutboxDeps } from '../outbox/producer.js';
import { outboxJobId, type OutboxRow } from '../db/outbox.js';
import { BATCH_QUEUE, USERS_IMPORT_JOB, type UsersImportPayload } from './jobs.js';
import { CSV_OPTIONS, importColumns, type ParsedRecord } from './import-csv.js';
import { batchTrx, insertBatchJob, insertChunk } from './repository.js';

// The upload path of the users import (route side): the bytes and the job stored in one transaction. The job that
// processes them is users-import.ts.

/** Upload bytes per stored chunk: big enough for few rows, small enough that the job reads one at a time. */
const UPLOAD_CHUNK_BYTES = 1024 * 1024;

/** A rejected upload: nothing of it is kept. */
export class UploadRejectedError extends Error {
  constructor(
    readonly statusCode: 400 | 413,
    message: string,
  ) {
    super(message);
    this.name = 'UploadRejectedError';
  }
}

/** Counts the data records of an upload as it streams by, and rejects what is not CSV with an email column. */
function createUploadCheck() {
  const parser = parse(CSV_OPTIONS);
  let header: string[] | undefined;
  let records = 0;
  let failure: Error | undefined;
  parser.on('data', (parsed: ParsedRecord) => {
    if (header === undefined) header = parsed.record;
    else records += 1;
  });
  parser.on('error', (error) => (failure ??= error));
  const ended = new Promise<void>((resolve) => {
    parser.on('end', resolve);
    parser.on('error', () => resolve());
  });
  const rejectIfFailed = () => {
    if (failure) throw new UploadRejectedError(400, `body is not valid CSV: ${failure.message}`);
    if (header !== undefined && importColumns(header) === undefined) throw new UploadRejectedError(400, 'CSV header has no email column');
  };
  return {
    write(piece: Buffer) {
      rejectIfFailed();
      parser.write(piece);
    },
    async end(): Promise<number> {
      parser.end();
      await ended;
      rejectIfFailed();
      if (header === undefined) throw new UploadRejectedError(400, 'CSV body is empty: expected a header row with an email column');
      return records;
    },
  };
}

/**
 * The next piece of a request body, undefined at its end. Read by hand, not
 * with for-await: leaving that loop destroys the request (and its socket),
 * and a rejected upload must still get its 413 or 400 answer.
 */
async function nextPiece(stream: Readable): Promise<Buffer | string | undefined> {
  for (;;) {
    const piece = stream.read() as Buffer | string | null;
    if (piece !== null) return piece;
    if (stream.readableEnded) return undefined;
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off('readable', done).off('end', done).off('error', failed);
        resolve();
      };
      const failed = (error: Error) => {
        stream.off('readable', done).off('end', done).off('error', failed);
        reject(error);
      };
      stream.on('readable', done).on('end', done).on('error', failed);
    });
  }
}

/**
 * Stores an upload and its `users-import` job in one transaction (the job
 * through the outbox): before the caller answers 202 the bytes are in
 * PostgreSQL, and a body over `maxBytes`, not CSV, or without an email column
 * rolls everything back.
 */
export async function storeUsersImport(
  deps: OutboxDeps,
  body: Readable,
  options: { maxBytes: number; sendVerification: boolean },
): Promise<{ jobId: string; rows: number }> {
  let outboxRow: OutboxRow | undefined;
  const stored = await deps.db.transaction().execute(async (trx) => {
    const payload: UsersImportPayload = { sendVerification: options.sendVerification };
    outboxRow = await enqueue(trx, BATCH_QUEUE, USERS_IMPORT_JOB, payload);
    const jobId = outboxJobId(outboxRow.id);
    const btrx = batchTrx(trx);
    await insertBatchJob(btrx, { jobId, kind: USERS_IMPORT_JOB, params: payload });
    const check = createUploadCheck();
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let received = 0;
    let seq = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      await insertChunk(btrx, 'batch_import_chunks', { jobId, seq, data: Buffer.concat(pending, pendingBytes) });
      seq += 1;
      pending = [];
      pendingBytes = 0;
    };
    for (;;) {
      const raw = await nextPiece(body);
      if (raw === undefined) break;
      const piece = typeof raw === 'string' ? Buffer.from(raw) : raw;
      received += piece.length;
      if (received > options.maxBytes) throw new UploadRejectedError(413, `import body is larger than ${options.maxBytes} bytes`);
      check.write(piece);
      pending.push(piece);
      pendingBytes += piece.length;
      if (pendingBytes >= UPLOAD_CHUNK_BYTES) await flush();
    }
    const rows = await check.end();
    await flush();
    await batchTrx(trx).updateTable('batch_jobs').set({ total: rows }).where('job_id', '=', jobId).execute();
    return { jobId, rows };
  });
  await publishAfterCommit(deps, outboxRow ? [outboxRow] : []);
  return stored;
}
