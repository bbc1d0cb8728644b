import t from 'tap';
import { Readable } from 'node:stream';
import { sql } from 'kysely';
import { validateImportRow } from '../../src/batch/users-import.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor, type TestErrand } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };
const MAX_BYTES = 4096;

function upload(errand: TestErrand, body: string | Buffer | Readable, options: { contentType?: string; sendVerification?: boolean } = {}) {
  const query = options.sendVerification === undefined ? '' : `?sendVerification=${options.sendVerification}`;
  return errand.app.inject({
    method: 'POST',
    url: `/admin/imports/users${query}`,
    headers: { ...bearer, 'content-type': options.contentType ?? 'text/csv' },
    payload: body,
  });
}

async function waitForResult(errand: TestErrand, jobId: string) {
  const view = await waitFor(
    async () => {
      const body = (await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer })).json<{
        state: string;
        result: unknown;
        failedReason: string | null;
      }>();
      return body.state === 'completed' || body.state === 'failed' ? body : undefined;
    },
    30000,
    `import ${jobId} to finish`,
  );
  if (view.state !== 'completed') throw new Error(`import failed: ${view.failedReason}`);
  return view.result;
}

async function storedCounts(errand: TestErrand) {
  const { rows } = await sql<{
    jobs: string;
    chunks: string;
    errors: string;
    batch_outbox: string;
    users: string;
    verification_outbox: string;
  }>`
    SELECT (SELECT count(*) FROM batch_jobs) AS jobs,
           (SELECT count(*) FROM batch_import_chunks) AS chunks,
           (SELECT count(*) FROM batch_import_errors) AS errors,
           (SELECT count(*) FROM outbox WHERE queue = 'batch') AS batch_outbox,
           (SELECT count(*) FROM users) AS users,
           (SELECT count(*) FROM outbox WHERE job_name = 'email-verification') AS verification_outbox`.execute(errand.deps.db);
  return Object.fromEntries(Object.entries(rows[0]).map(([k, v]) => [k, Number(v)]));
}

// Line numbers are the file's: the header is line 1, a quoted line break moves the rest down.
const CSV =
  [
    'Name,EMAIL,extra', // 1
    'Alice,alice@example.com,x', // 2 created
    'Bob,Bob@Example.COM,y', // 3 created as bob@example.com
    '"Smith, Carol",carol@example.com,z', // 4 created, name with a comma
    ',dup@example.com,', // 5 existing (signed up before)
    'Dave,alice@example.com,', // 6 existing (earlier in this file)
    'Eve,not-an-email,', // 7 invalid
    '"multi', // 8 invalid: control character in name (starts on line 8)
    'line",frank@example.com,', // 9
    'Gina,gina@example.com', // 10 invalid: 2 fields
    '',
    'Hank,hank@example.com,"quoted ""extra"""', // 12 created
  ].join('\r\n') + '\r\n';

t.test('users import', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(
    t,
    testEnv(t, { ROLE: 'all', ADMIN_TOKEN, SMTP_URL: smtp.url, BATCH_CHUNK_ROWS: '2', IMPORT_MAX_BYTES: String(MAX_BYTES) }),
  );
  const { app } = errand;

  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'dup@example.com' } })).statusCode, 202);
  await smtp.waitForEmails(1);

  t.test('good, duplicate and bad rows: exact counts, errors file, one email per created user', async (t) => {
    const res = await upload(errand, CSV, { sendVerification: true });
    t.equal(res.statusCode, 202, res.body);
    const { jobId } = res.json<{ jobId: string }>();
    t.same(await waitForResult(errand, jobId), { rows: 9, created: 4, existing: 2, invalid: 3 });

    const users = await errand.deps.db.selectFrom('users').select(['email', 'name']).orderBy('email').execute();
    t.same(users, [
      { email: 'alice@example.com', name: 'Alice' },
      { email: 'bob@example.com', name: 'Bob' },
      { email: 'carol@example.com', name: 'Smith, Carol' },
      { email: 'dup@example.com', name: null },
      { email: 'hank@example.com', name: 'Hank' },
    ]);

    const errors = await app.inject({ method: 'GET', url: `/admin/imports/${jobId}/errors`, headers: bearer });
    t.equal(errors.statusCode, 200);
    t.match(errors.headers['content-type'], /^text\/csv/);
    t.equal(
      errors.body,
      'line,reason\r\n' +
        '7,"email must match format ""email"""\r\n' +
        '8,name contains a control character\r\n' +
        '10,"row has 2 fields, the header has 3"\r\n',
    );

    const emails = await smtp.waitForEmails(5);
    t.same(
      emails
        .slice(1)
        .flatMap((e) => e.to)
        .sort(),
      ['alice@example.com', 'bob@example.com', 'carol@example.com', 'hank@example.com'],
    );
    t.equal((await storedCounts(errand)).verification_outbox, 5, 'one verification job per created user, plus the signup');
    t.equal((await storedCounts(errand)).chunks, 0, 'the upload is gone once every row is in');
  });

  t.test('the same file again creates nothing and queues nothing', async (t) => {
    const before = await storedCounts(errand);
    const { jobId } = (await upload(errand, CSV, { sendVerification: true })).json<{ jobId: string }>();
    t.same(await waitForResult(errand, jobId), { rows: 9, created: 0, existing: 6, invalid: 3 });
    const after = await storedCounts(errand);
    t.equal(after.users, before.users);
    t.equal(after.verification_outbox, before.verification_outbox);
  });

  t.test('sendVerification=false creates users without emails', async (t) => {
    const before = await storedCounts(errand);
    const { jobId } = (await upload(errand, 'email\nivy@example.com\n', { sendVerification: false })).json<{ jobId: string }>();
    t.same(await waitForResult(errand, jobId), { rows: 1, created: 1, existing: 0, invalid: 0 });
    const after = await storedCounts(errand);
    t.equal(after.users, before.users + 1);
    t.equal(after.verification_outbox, before.verification_outbox);
  });

  t.test('413 and 400 uploads leave nothing behind', async (t) => {
    const before = await storedCounts(errand);
    const big = `email\n${'x'.repeat(MAX_BYTES)}@example.com\n`;
    const declared = await upload(errand, big);
    t.equal(declared.statusCode, 413, 'over the limit by content-length');
    // Chunked, no content-length: counted while it streams.
    const streamed = await upload(errand, Readable.from([Buffer.from('email\n'), Buffer.from(`${'y'.repeat(MAX_BYTES)}\n`)]));
    t.equal(streamed.statusCode, 413, 'over the limit while streaming');
    t.match(streamed.json(), { statusCode: 413, error: 'Payload Too Large' });

    const bad: [string, string | Buffer, string][] = [
      ['JSON body', '{"email":"a@example.com"}', 'application/json'],
      ['no content type', 'email\na@example.com\n', ''],
      ['no email column', 'name,mail\nA,a@example.com\n', 'text/csv'],
      ['empty', '', 'text/csv'],
      ['unclosed quote', 'email\n"a@example.com\n', 'text/csv'],
    ];
    for (const [what, body, contentType] of bad) {
      const res = await upload(errand, body, { contentType });
      t.equal(res.statusCode, 400, `${what}: ${res.body}`);
    }
    t.same(await storedCounts(errand), before, 'no job, chunk, error row, outbox row or user kept');
    t.equal((await app.inject({ method: 'GET', url: '/admin/imports/outbox-999999/errors', headers: bearer })).statusCode, 404);
  });

  t.test("rows are judged by the signup route's own rules", async (t) => {
    for (const email of [
      'ok@example.com',
      'UPPER@Example.org',
      'a@localhost',
      ' pad@example.com',
      'x@y',
      'a"b@example.com',
      `${'l'.repeat(250)}@e.co`,
      'tab\t@example.com',
      // TypeBox's own email format accepts these two, Fastify's Ajv (ajv-formats) does not: one rule for both.
      '"quoted"@example.com',
      'a@[127.0.0.1]',
      'a..b@example.com',
    ]) {
      const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
      t.equal(validateImportRow({ email }).ok, res.statusCode === 202, `${JSON.stringify(email)}: signup ${res.statusCode}`);
    }
  });

  t.test('one control-character rule: a C1 control is named as one, in either field', async (t) => {
    for (const [fields, field] of [
      [{ email: 'a\u0085b@example.com' }, 'email'],
      [{ email: 'a@example.com', name: 'A\u009bB' }, 'name'],
    ] as const) {
      t.same(validateImportRow(fields), { ok: false, reason: `${field} contains a control character` });
      const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: fields });
      t.match(res.json().message, `body/${field} must not contain control characters`, 'signup refuses it by the same rule');
    }
  });
});
