import t from 'tap';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import type { Db } from '../../src/db/schema.js';
import { writeOrdersExport } from '../../src/batch/orders-export.js';
import { batchDb, readImportErrorsCsv } from '../../src/batch/repository.js';
import { startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// PostgreSQL builds the export's bytes (CSV quoting, JSON escaping, key order). These checks hold them to an
// independent JavaScript formatter (csvField below, JSON.stringify) on awkward text, and to (created_at, id)
// order when several orders share a millisecond but not a microsecond.

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

const AWKWARD = [
  'plain@example.com',
  'tab\there@example.com',
  'back\\slash@example.com',
  'ctl\u0001\u0008\u000c\u001f\u007f@example.com',
  'ünïcødé😀\u2028\u2029@example.com',
  'cr\ronly@example.com',
  'lf\nonly@example.com',
  'crlf\r\nboth@example.com',
  'quote"only@example.com',
  'comma,only@example.com',
  '"",,\r\n""',
  '',
  '</script>/@example.com',
  '=cmd|"/c calc"!A1@example.com',
  '-x,y@example.com',
  '\r+crlead@example.com',
];

/**
 * The test's own CSV cell, the reference the SQL writer (src/batch/csv-sql.ts) is held to: a cell starting with
 * = + - @ tab or CR gets a leading `'`; then RFC 4180, a cell with a comma, quote, CR or LF quoted, quotes doubled.
 */
function csvField(value: string): string {
  const cell = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(cell) ? `"${cell.replace(/"/g, '""')}"` : cell;
}

interface ReferenceRow {
  id: string;
  email: string;
  amount: string;
  currency: string;
  status: string;
  provider_ref: string;
  paid_at: string | null;
  created_at: string;
  updated_at: string;
}

/** The export as the JavaScript formatter wrote it, from the rows in (created_at, id) order. */
async function referenceExport(db: Db, format: 'csv' | 'ndjson'): Promise<string> {
  const iso = (column: string) => sql<string>`to_char(${sql.ref(column)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
  const rows = (await db
    .selectFrom('orders')
    .select([
      'id',
      'email',
      sql<string>`amount::text`.as('amount'),
      'currency',
      'status',
      'provider_ref',
      iso('paid_at').as('paid_at'),
      iso('created_at').as('created_at'),
      iso('updated_at').as('updated_at'),
    ])
    .orderBy('orders.created_at')
    .orderBy('orders.id')
    .execute()) as ReferenceRow[];
  if (format === 'csv')
    return (
      'id,email,amount,currency,status,providerRef,paidAt,createdAt,updatedAt\r\n' +
      rows
        .map(
          (r) =>
            `${r.id},${csvField(r.email)},${r.amount},${csvField(r.currency)},${r.status},${csvField(r.provider_ref)},${r.paid_at ?? ''},${r.created_at},${r.updated_at}\r\n`,
        )
        .join('')
    );
  return rows
    .map(
      (r) =>
        `${JSON.stringify({ id: r.id, email: r.email, amount: Number(r.amount), currency: r.currency, status: r.status, providerRef: r.provider_ref, paidAt: r.paid_at, createdAt: r.created_at, updatedAt: r.updated_at })}\n`,
    )
    .join('');
}

class Sink extends Writable {
  chunks: Buffer[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void) {
    this.chunks.push(chunk);
    done();
  }
}

t.test('export bytes equal the JavaScript formatter on awkward text; microsecond ties keep (created_at, id) order', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', ADMIN_TOKEN, BATCH_CHUNK_ROWS: '2' }));
  const { db } = errand.deps;
  let n = 0;
  for (const [i, text] of AWKWARD.entries()) {
    n += 1;
    await sql`
      INSERT INTO orders (id, email, amount, currency, status, provider_ref, paid_at, created_at, updated_at)
      VALUES (${`00000000-0000-4000-8000-${String(n).padStart(12, '0')}`}::uuid, ${text}, ${i === 0 ? 9007199254740991 : 1 + i}, 'USD',
              ${i % 2 === 0 ? 'paid' : 'pending'}, ${`ref ${i} ${text}`}, ${i % 2 === 0 ? '2026-01-05T10:00:00.123456Z' : null}::timestamptz,
              ${`2026-01-0${1 + (i % 3)}T00:00:00.${String(i).padStart(3, '0')}999Z`}::timestamptz, '2026-01-04T23:59:59.9999Z'::timestamptz)`.execute(
      db,
    );
  }
  // Six orders in one millisecond: the later the microsecond, the smaller the id, so (created_at, id) order is
  // the reverse of id order. Chunks of 2 then end mid-millisecond, where a key order by formatted (millisecond)
  // text and a keyset condition on the real timestamp would disagree and lose or repeat orders.
  for (let k = 1; k <= 6; k += 1) {
    n += 1;
    await sql`
      INSERT INTO orders (id, email, amount, currency, status, provider_ref, created_at, updated_at)
      VALUES (${`00000000-0000-4000-9000-00000000000${k}`}::uuid, ${`tie${k}@example.com`}, 100, 'EUR', 'pending', ${`pay_tie_${k}`},
              ${`2026-01-03T12:00:00.000${7 - k}00Z`}::timestamptz, '2026-01-03T12:00:00Z'::timestamptz)`.execute(db);
  }

  for (const format of ['csv', 'ndjson'] as const) {
    const expected = await referenceExport(db, format);

    const res = await errand.app.inject({ method: 'POST', url: '/admin/exports/orders', headers: bearer, payload: { format } });
    t.equal(res.statusCode, 202);
    const { jobId } = res.json<{ jobId: string }>();
    const view = await waitFor(
      async () => {
        const job = await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer });
        const body = job.json<{ state: string; result: { rows: number; bytes: number } | null }>();
        return body.state === 'completed' || body.state === 'failed' ? body : undefined;
      },
      30000,
      `export ${jobId} done`,
    );
    t.match(view, { state: 'completed', result: { rows: n, bytes: Buffer.byteLength(expected) } }, `${format}: job counts`);
    const file = await errand.app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer });
    t.equal(file.statusCode, 200);
    t.ok(file.rawPayload.equals(Buffer.from(expected, 'utf8')), `${format}: job file byte-identical to the JavaScript formatter`);
    if (!file.rawPayload.equals(Buffer.from(expected, 'utf8'))) t.equal(file.body, expected);

    const sink = new Sink();
    const summary = await writeOrdersExport(db, { format }, sink, { chunkRows: 3 });
    t.equal(Buffer.concat(sink.chunks).toString('utf8'), expected, `${format}: in-process export identical`);
    t.match(summary, { rows: n, bytes: Buffer.byteLength(expected) });
  }
});

/** RFC 4180 cells of a CSV file (quoted cells unquoted), one array per record. */
function csvRecords(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  // A cell: quoted ("" inside is one quote) or up to the next comma or CRLF.
  const cell = /"((?:[^"]|"")*)"|([^,\r\n]*(?:\r(?!\n)[^,\r\n]*)*)/y;
  let i = 0;
  while (i < text.length) {
    cell.lastIndex = i;
    const match = cell.exec(text)!;
    record.push(match[1] !== undefined ? match[1].replace(/""/g, '"') : match[2]);
    i = cell.lastIndex;
    if (text[i] === ',') {
      i += 1;
    } else {
      records.push(record);
      record = [];
      i += 2; // CRLF
    }
  }
  return records;
}

t.test('no exported CSV cell starts a formula: = + - @ tab CR get a leading quote, through the export job', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', ADMIN_TOKEN }));
  const { db } = errand.deps;
  const hostile: [email: string, providerRef: string][] = [
    ['=HYPERLINK("http://evil.example/x","click")@example.com', '=1+1'],
    ['+1@example.com', '+pay'],
    ['-2+3@example.com', '-pay_ref'],
    ['@SUM(A1:A9)@example.com', '@pay'],
    ['\tcmd@example.com', '\tpay'],
    ['\r=cmd@example.com', '\rpay'],
    ['plain@example.com', 'pay_plain'],
  ];
  for (const [i, [email, providerRef]] of hostile.entries()) {
    await sql`INSERT INTO orders (email, amount, currency, status, provider_ref) VALUES (${email}, ${100 + i}, 'USD', 'pending', ${providerRef})`.execute(
      db,
    );
  }
  const res = await errand.app.inject({ method: 'POST', url: '/admin/exports/orders', headers: bearer, payload: { format: 'csv' } });
  t.equal(res.statusCode, 202);
  const { jobId } = res.json<{ jobId: string }>();
  await waitFor(
    async () => {
      const job = await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer });
      const { state } = job.json<{ state: string }>();
      return state === 'completed' || state === 'failed' ? state : undefined;
    },
    30000,
    `export ${jobId} done`,
  );
  const file = await errand.app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer });
  t.equal(file.statusCode, 200);
  const [header, ...rows] = csvRecords(file.body);
  t.equal(header[1], 'email');
  t.equal(rows.length, hostile.length);
  for (const row of rows) {
    for (const cell of row) t.notOk(/^[=+\-@\t\r]/.test(cell), `cell ${JSON.stringify(cell)} starts no formula`);
  }
  const byEmail = new Map(rows.map((row) => [row[1], row[5]]));
  for (const [email, providerRef] of hostile) {
    const defused = (text: string) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);
    t.ok(byEmail.has(defused(email)), `${JSON.stringify(email)} exported as ${JSON.stringify(defused(email))}`);
    t.equal(byEmail.get(defused(email)), defused(providerRef), `providerRef ${JSON.stringify(providerRef)}`);
  }
});

t.test('the import-errors file is written by the same SQL: quoted reasons, defused formula starts', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', ADMIN_TOKEN }));
  const upload = await errand.app.inject({
    method: 'POST',
    url: '/admin/imports/users',
    headers: { ...bearer, 'content-type': 'text/csv' },
    payload: 'name,email,extra\r\nEve,not-an-email,\r\nGina,gina@example.com\r\n',
  });
  t.equal(upload.statusCode, 202, upload.body);
  const { jobId } = upload.json<{ jobId: string }>();
  const state = await waitFor(
    async () => {
      const job = await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer });
      const { state } = job.json<{ state: string }>();
      return state === 'completed' || state === 'failed' ? state : undefined;
    },
    30000,
    `import ${jobId} done`,
  );
  t.equal(state, 'completed');
  // An importer's reason starts with its field ("email …", "name …", "row …"), never with a formula character. The
  // download's only input is batch_import_errors, so two stored reasons stand for any that ever could.
  await sql`INSERT INTO batch_import_errors (job_id, line, reason) VALUES (${jobId}, 100, '-5'), (${jobId}, 101, '=a,b')`.execute(
    errand.deps.db,
  );
  const file = await errand.app.inject({ method: 'GET', url: `/admin/imports/${jobId}/errors`, headers: bearer });
  t.equal(file.statusCode, 200);
  t.equal(
    file.body,
    'line,reason\r\n' +
      '2,"email must match format ""email"""\r\n' +
      '3,"row has 2 fields, the header has 3"\r\n' +
      "100,'-5\r\n" +
      `101,"'=a,b"\r\n`,
    'reasons quoted (RFC 4180), formula starts defused',
  );
  const reasons: [number, string][] = [
    [2, 'email must match format "email"'],
    [3, 'row has 2 fields, the header has 3'],
    [100, '-5'],
    [101, '=a,b'],
  ];
  t.equal(
    file.body,
    `line,reason\r\n${reasons.map(([line, reason]) => `${line},${csvField(reason)}\r\n`).join('')}`,
    'as the reference writes it',
  );
  let paged = 'line,reason\r\n';
  for await (const page of readImportErrorsCsv(batchDb(errand.deps.db), jobId, 1)) paged += page;
  t.equal(paged, file.body, 'read one reason per page (keyset on line): the same lines');
});
