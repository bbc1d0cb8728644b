import { Readable } from 'node:stream';
import { UnrecoverableError, type Job } from 'bullmq';
import { parse, type Options as CsvParseOptions } from 'csv-parse';
import AjvModule from 'ajv';
import addFormatsModule from 'ajv-formats';
import { EMAIL_QUEUE, EMAIL_VERIFICATION_JOB } from '../email/jobs.js';
import { enqueue, outboxJobId, outboxValues, publishAfterCommit, type OutboxDeps, type OutboxRow } from '../outbox/producer.js';
import { SignupBodySchema } from '../signup/routes.js';
import { BATCH_QUEUE, USERS_IMPORT_JOB, type UsersImportPayload } from './jobs.js';
import { assertCheckpointWritten, JobCancelledError, runCancellable, runCheckpointed } from './chunks.js';
import { advanceCheckpoint, batchDb, batchTrx, findBatchJob, insertBatchJob, insertChunk, readChunks } from './repository.js';
import { firstValidationError, hasControlCharacter } from '../core/schemas.js';

// ajv and ajv-formats are CommonJS: their default export sits one level down under nodenext.
const Ajv = AjvModule.default;
const addFormats = addFormatsModule.default;

/** Upload bytes per stored chunk: big enough for few rows, small enough that the job reads one at a time. */
const UPLOAD_CHUNK_BYTES = 1024 * 1024;

/** One parser configuration for the upload check and the job, so both see the same records and line numbers. */
const CSV_OPTIONS: CsvParseOptions = {
  bom: true,
  info: true,
  skip_empty_lines: true,
  // A row with the wrong number of fields is a bad row (reported), not a bad file.
  relax_column_count: true,
  // Files from spreadsheets and from scripts mix CRLF and LF.
  record_delimiter: ['\r\n', '\n'],
};

interface ParsedRecord {
  record: string[];
  info: { empty_lines: number };
}

/**
 * The file line each record starts on (the header is line 1). Counted here
 * rather than taken from csv-parse's `info.lines`, which counts a CRLF inside
 * a quoted field as two lines: records follow one another, skipped empty
 * lines come from `info.empty_lines`, and a record spans as many lines as the
 * line breaks inside its quoted fields.
 */
function createLineCounter() {
  let nextLine = 1;
  let emptyLinesSeen = 0;
  return (parsed: ParsedRecord): number => {
    const start = nextLine + (parsed.info.empty_lines - emptyLinesSeen);
    emptyLinesSeen = parsed.info.empty_lines;
    let breaks = 0;
    for (const field of parsed.record) breaks += field.match(/\r?\n/g)?.length ?? 0;
    nextLine = start + breaks + 1;
    return start;
  };
}

type NumberedRecord = ParsedRecord & { line: number };

export interface ImportColumns {
  count: number;
  email: number;
  name: number | undefined;
}

/** Header `email,name` in any order and case, extra columns ignored; undefined without an email column. */
export function importColumns(header: string[]): ImportColumns | undefined {
  const names = header.map((h) => h.trim().toLowerCase());
  const email = names.indexOf('email');
  if (email === -1) return undefined;
  const name = names.indexOf('name');
  return { count: names.length, email, name: name === -1 ? undefined : name };
}

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

// The signup route's own schema, compiled with the options Fastify's Ajv runs with (app.ts): the same accepted addresses.
const ajv = new Ajv({ coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false });
addFormats(ajv);
const checkSignupBody = ajv.compile(SignupBodySchema);

export type RowVerdict = { ok: true; email: string; name: string | null } | { ok: false; reason: string };

/** One import row judged as a signup body would be, then normalised as signup does (trimmed, lower-cased email; empty name → none). */
export function validateImportRow(fields: { email: string; name?: string }): RowVerdict {
  for (const [field, value] of Object.entries(fields)) {
    if (value !== undefined && hasControlCharacter(value)) return { ok: false, reason: `${field} contains a control character` };
  }
  const body = fields.name === undefined ? { email: fields.email } : { email: fields.email, name: fields.name };
  if (!checkSignupBody(body)) {
    const path = (instancePath: string) => instancePath.replace(/^\//, '');
    return { ok: false, reason: firstValidationError(checkSignupBody.errors ?? [], { root: 'row', path }) };
  }
  return { ok: true, email: fields.email.trim().toLowerCase(), name: fields.name?.trim() || null };
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

export interface ImportSummary {
  rows: number;
  created: number;
  existing: number;
  invalid: number;
}

export interface ImportJobDeps extends OutboxDeps {
  chunkRows: number;
  chunkPauseMs: number;
}

interface Tally {
  created: number;
  existing: number;
  invalid: number;
}

/**
 * The `users-import` job: parses the stored upload from the start (the
 * parse is cheap and deterministic), skips the rows a checkpoint already
 * covers, and per chunk creates the new users, their verification emails in
 * the outbox, the error rows and the checkpoint in one transaction. Existing
 * addresses are left alone (`ON CONFLICT DO NOTHING`), so a resumed or
 * repeated import creates no second user and no second email.
 */
export async function processUsersImportJob(
  deps: ImportJobDeps,
  payload: UsersImportPayload,
  job: Job,
  signal: AbortSignal | undefined,
): Promise<ImportSummary> {
  const bdb = batchDb(deps.db);
  const jobId = job.id!;
  return runCancellable(bdb, jobId, async () => {
    const state = await findBatchJob(bdb, jobId);
    if (!state || state.kind !== USERS_IMPORT_JOB) throw new UnrecoverableError(`no stored upload for import ${jobId}`);
    if (state.cancelRequested || state.cancelled) throw new JobCancelledError();
    const tally: Tally = { created: state.counts.created ?? 0, existing: state.counts.existing ?? 0, invalid: state.counts.invalid ?? 0 };
    if (state.finished) return { rows: state.rowsDone, ...tally };

    let { chunksDone, rowsDone } = state;

    const parser = parse(CSV_OPTIONS);
    const source = Readable.from(readChunks(bdb, 'batch_import_chunks', jobId));
    source.on('error', (error) => parser.destroy(error));
    source.pipe(parser);
    const records = (parser as AsyncIterable<ParsedRecord>)[Symbol.asyncIterator]();

    let columns: ImportColumns | undefined;
    let seen = 0;
    const lineOf = createLineCounter();
    /** The next chunkRows records not yet covered by the checkpoint; final at the end of the upload. */
    const nextBatch = async (): Promise<{ batch: NumberedRecord[]; final: boolean }> => {
      const batch: NumberedRecord[] = [];
      for (;;) {
        const next = await records.next();
        if (next.done) return { batch, final: true };
        const parsed = next.value;
        const line = lineOf(parsed);
        if (columns === undefined) {
          columns = importColumns(parsed.record);
          // Checked at upload; a stored upload without one was not stored by errand.
          if (!columns) throw new UnrecoverableError('stored upload has no email column');
          continue;
        }
        seen += 1;
        if (seen <= rowsDone) continue;
        batch.push({ ...parsed, line });
        if (batch.length >= deps.chunkRows) return { batch, final: false };
      }
    };
    try {
      await runCheckpointed(job, signal, {
        done: rowsDone,
        total: state.total,
        pauseMs: deps.chunkPauseMs,
        commitNextChunk: async () => {
          const { batch, final } = await nextBatch();
          if (!columns) throw new UnrecoverableError('stored upload is empty');
          const outboxRows = await commitImportChunk(deps, {
            jobId,
            payload,
            batch,
            columns,
            expectedChunks: chunksDone,
            rowsBefore: rowsDone,
            tally,
            final,
          });
          chunksDone += 1;
          rowsDone += batch.length;
          return { done: rowsDone, final, outboxRows };
        },
        afterCommit: (chunk) => publishAfterCommit(deps, chunk.outboxRows),
      });
    } finally {
      // Leaving early (cancel, error) must not leave the chunk reader paused on its next query.
      source.destroy();
      await records.return?.();
    }
    return { rows: rowsDone, ...tally };
  });
}

async function commitImportChunk(
  deps: ImportJobDeps,
  chunk: {
    jobId: string;
    payload: UsersImportPayload;
    batch: NumberedRecord[];
    columns: ImportColumns;
    expectedChunks: number;
    rowsBefore: number;
    tally: Tally;
    final: boolean;
  },
): Promise<OutboxRow[]> {
  const { columns } = chunk;
  const valid = new Map<string, string | null>();
  let duplicatesInChunk = 0;
  const errors: { line: number; reason: string }[] = [];
  for (const parsed of chunk.batch) {
    const { record } = parsed;
    if (record.length !== columns.count) {
      errors.push({ line: parsed.line, reason: `row has ${record.length} fields, the header has ${columns.count}` });
      continue;
    }
    const verdict = validateImportRow({
      email: record[columns.email],
      ...(columns.name === undefined ? {} : { name: record[columns.name] }),
    });
    if (!verdict.ok) errors.push({ line: parsed.line, reason: verdict.reason });
    else if (valid.has(verdict.email)) duplicatesInChunk += 1;
    else valid.set(verdict.email, verdict.name);
  }

  const { outboxRows, next } = await deps.db.transaction().execute(async (trx) => {
    const btrx = batchTrx(trx);
    const created =
      valid.size === 0
        ? []
        : await trx
            .insertInto('users')
            .values(
              // In code-unit order, as concurrent signup statements lock addresses (collate "C"): no deadlock between them.
              [...valid]
                .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
                .map(([email, name]) => ({
                  email,
                  name,
                  // Not emailed now: a later signup of this address may send one at once (the 60 s throttle starts at epoch).
                  ...(chunk.payload.sendVerification ? {} : { verification_requested_at: new Date(0) }),
                })),
            )
            .onConflict((oc) => oc.column('email').doNothing())
            .returning('id')
            .execute();
    const outboxRows =
      chunk.payload.sendVerification && created.length > 0
        ? await trx
            .insertInto('outbox')
            .values(created.map((user) => outboxValues(EMAIL_QUEUE, EMAIL_VERIFICATION_JOB, { userId: user.id })))
            .returning(['id', 'queue', 'job_name', 'payload'])
            .execute()
        : [];
    if (errors.length > 0) {
      await btrx
        .insertInto('batch_import_errors')
        .values(errors.map((e) => ({ job_id: chunk.jobId, line: e.line, reason: e.reason })))
        .onConflict((oc) => oc.columns(['job_id', 'line']).doNothing())
        .execute();
    }
    const next: Tally = {
      created: chunk.tally.created + created.length,
      existing: chunk.tally.existing + (valid.size - created.length) + duplicatesInChunk,
      invalid: chunk.tally.invalid + errors.length,
    };
    const outcome = await advanceCheckpoint(btrx, {
      jobId: chunk.jobId,
      expectedChunks: chunk.expectedChunks,
      cursor: null,
      rows: chunk.rowsBefore + chunk.batch.length,
      bytes: 0,
      counts: { ...next },
      finished: chunk.final,
    });
    assertCheckpointWritten(outcome, chunk.jobId);
    // The upload is no longer needed once every row is in; the error rows stay for GET …/errors.
    if (chunk.final) await btrx.deleteFrom('batch_import_chunks').where('job_id', '=', chunk.jobId).execute();
    return { outboxRows, next };
  });
  // Counted into the caller's tally only once the chunk has committed, never for a rolled-back one.
  Object.assign(chunk.tally, next);
  return outboxRows;
}
