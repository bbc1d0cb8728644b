import { Readable } from 'node:stream';
import { UnrecoverableError, type Job } from 'bullmq';
import { parse } from 'csv-parse';
import { Compile } from 'typebox/compile';
import { EMAIL_VERIFICATION_JOB, emailQueue } from '../email/jobs.js';
import { publishAfterCommit, type OutboxDeps } from '../outbox/producer.js';
import { insertOutboxRows, outboxJob, type OutboxRow } from '../db/outbox.js';
import { SignupBodySchema } from '../signup/schemas.js';
import { USERS_IMPORT_JOB, type UsersImportPayload } from './jobs.js';
import { assertCheckpointWritten, JobCancelledError, runCancellable, runCheckpointed } from './chunks.js';
import { CSV_OPTIONS, importColumns, type ImportColumns, type ParsedRecord } from './import-csv.js';
import { advanceCheckpoint, batchDb, batchTrx, findBatchJob, readChunks } from './repository.js';
import { firstValidationError, hasControlCharacter } from '../core/schemas.js';

// The users-import job: judges and creates the rows of an upload stored by import-upload.ts.

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

// The signup route's own schema, compiled by TypeBox (as job payloads are): its `email` format is the one Fastify's Ajv
// checks (core/schemas.ts), so an import accepts the addresses signup accepts.
const checkSignupBody = Compile(SignupBodySchema);

export type RowVerdict = { ok: true; email: string; name: string | null } | { ok: false; reason: string };

/** One import row judged as a signup body would be, then normalised as signup does (trimmed, lower-cased email; empty name → none). */
export function validateImportRow(fields: { email: string; name?: string }): RowVerdict {
  for (const [field, value] of Object.entries(fields)) {
    if (value !== undefined && hasControlCharacter(value)) return { ok: false, reason: `${field} contains a control character` };
  }
  const body = fields.name === undefined ? { email: fields.email } : { email: fields.email, name: fields.name };
  if (!checkSignupBody.Check(body)) {
    const path = (instancePath: string) => instancePath.replace(/^\//, '');
    return { ok: false, reason: firstValidationError(checkSignupBody.Errors(body), { root: 'row', path }) };
  }
  return { ok: true, email: fields.email.trim().toLowerCase(), name: fields.name?.trim() || null };
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
    const outboxRows = chunk.payload.sendVerification
      ? await insertOutboxRows(
          trx,
          outboxJob(emailQueue, EMAIL_VERIFICATION_JOB),
          created.map((user) => ({ userId: user.id })),
        )
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
