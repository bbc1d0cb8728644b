import t from 'tap';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { batchDb } from '../../src/batch/repository.js';
import { writeOrdersExport } from '../../src/batch/orders-export.js';
import { spawnErrand, startSmtpServer, startTestErrand, testEnv, waitFor, type ChildErrand, type TestErrand } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };
const ORDERS = 1000;
const IMPORT_ROWS = 300;

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

async function batchRow(errand: TestErrand, jobId: string) {
  return batchDb(errand.deps.db).selectFrom('batch_jobs').selectAll().where('job_id', '=', jobId).executeTakeFirst();
}

async function jobView(errand: TestErrand, jobId: string) {
  const res = await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer });
  return res.statusCode === 200
    ? res.json<{ state: string; failedReason: string | null; result: unknown; progress: { done: number } | null }>()
    : undefined;
}

const waitForState = (errand: TestErrand, jobId: string, state: string, timeoutMs = 60000) =>
  waitFor(
    async () => {
      const view = await jobView(errand, jobId);
      return view?.state === state ? view : undefined;
    },
    timeoutMs,
    `job ${jobId} ${state}`,
  );

const waitForRows = (errand: TestErrand, jobId: string, rows: number) =>
  waitFor(
    async () => {
      const row = await batchRow(errand, jobId);
      return row && Number(row.rows_done) >= rows ? Number(row.rows_done) : undefined;
    },
    60000,
    `job ${jobId} past ${rows} rows`,
  );

async function kill(worker: ChildErrand) {
  worker.child.kill('SIGKILL');
  await worker.exited;
}

async function post(errand: TestErrand, url: string, payload: unknown) {
  const res = await errand.app.inject({ method: 'POST', url, headers: bearer, payload: payload as Record<string, unknown> });
  if (res.statusCode !== 202) throw new Error(`${url} answered ${res.statusCode}: ${res.body}`);
  return res.json<{ jobId: string }>().jobId;
}

t.test('long jobs resume after kill -9, and stop when cancelled from another process', async (t) => {
  const smtp = await startSmtpServer(t);
  const env = testEnv(t, {
    ADMIN_TOKEN,
    SMTP_URL: smtp.url,
    LOG_LEVEL: 'info',
    BATCH_CHUNK_ROWS: '20',
    BATCH_CHUNK_PAUSE_MS: '100',
    BATCH_LOCK_DURATION_MS: '2000',
    BATCH_STALLED_INTERVAL_MS: '1000',
    // Email jobs active in a killed worker come back quickly too.
    WORKER_LOCK_DURATION_MS: '2000',
    WORKER_STALLED_INTERVAL_MS: '1000',
  });
  // This process serves the admin API only: every job runs in a child worker process.
  const api = await startTestErrand(t, { ...env, ROLE: 'api' });
  await sql`
    INSERT INTO orders (email, amount, currency, status, provider_ref, created_at)
    SELECT 'buyer' || i || '@example.com', i, 'EUR', 'pending', 'pay_' || i, timestamptz '2026-01-01' + i * interval '1 second'
      FROM generate_series(1, ${ORDERS}) AS i`.execute(api.deps.db);
  const spawnWorker = () => spawnErrand(t, { ...env, ROLE: 'worker' });

  t.test('a waiting job is simply removed', async (t) => {
    const jobId = await post(api, '/admin/exports/orders', {});
    await waitForState(api, jobId, 'waiting');
    const res = await api.app.inject({ method: 'POST', url: `/admin/jobs/batch/${jobId}/cancel`, headers: bearer });
    t.equal(res.statusCode, 202);
    t.match(res.json(), { jobId, status: 'removed' });
    t.equal(await jobView(api, jobId), undefined, 'gone from the queue');
    t.equal(await batchRow(api, jobId), undefined, 'and from PostgreSQL');
  });

  let exportSha = '';
  t.test('kill -9 mid-export: another worker finishes it, byte-identical', async (t) => {
    const first = await spawnWorker();
    const jobId = await post(api, '/admin/exports/orders', { format: 'csv' });
    const rowsAtKill = await waitForRows(api, jobId, 200);
    await kill(first);
    t.ok(rowsAtKill < ORDERS, `killed mid-way (${rowsAtKill} of ${ORDERS} rows)`);
    const checkpoint = Number((await batchRow(api, jobId))!.rows_done);

    await spawnWorker();
    const done = await waitForState(api, jobId, 'completed');
    t.match(done.result, { rows: ORDERS });
    t.ok(checkpoint > 0 && checkpoint < ORDERS, `resumed from checkpoint ${checkpoint}`);
    const file = await api.app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer });
    t.equal(file.statusCode, 200);
    exportSha = sha256(file.rawPayload);

    // The same export, uninterrupted, written in this process by the code `npm run export` uses.
    const parts: Buffer[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (parts.push(chunk), cb()) });
    await writeOrdersExport(api.deps.db, { format: 'csv' }, sink, { chunkRows: 20 });
    t.equal(exportSha, sha256(Buffer.concat(parts)), 'sha256 equals an uninterrupted export');
    t.equal(file.rawPayload.toString().split('\r\n').length, ORDERS + 2, 'header, every order once, final newline');
  });

  t.test('kill -9 mid-import: resumed, no second user, no second email', async (t) => {
    const csv = `email,name\n${Array.from({ length: IMPORT_ROWS }, (_, i) => `member${i}@example.com,Member ${i}`).join('\n')}\n`;
    // The verification emails wait until the import is done: the kill below is about the import's checkpoints,
    // not about an SMTP send cut between the server's acceptance and the sent_emails row (at least once by design:
    // see README, "Outages lose no email"; stalled email jobs are covered in test/ops/kill-worker.test.ts).
    const emailQueue = api.deps.queues.email;
    await emailQueue.pause();
    t.teardown(() => emailQueue.resume());
    const running = await spawnWorker();
    const res = await api.app.inject({
      method: 'POST',
      url: '/admin/imports/users?sendVerification=true',
      headers: { ...bearer, 'content-type': 'text/csv' },
      payload: csv,
    });
    t.equal(res.statusCode, 202);
    const { jobId } = res.json<{ jobId: string }>();
    const rowsAtKill = await waitForRows(api, jobId, 60);
    await kill(running);
    t.ok(rowsAtKill < IMPORT_ROWS, `killed mid-way (${rowsAtKill} of ${IMPORT_ROWS} rows)`);

    await spawnWorker();
    const done = await waitForState(api, jobId, 'completed');
    t.same(done.result, { rows: IMPORT_ROWS, created: IMPORT_ROWS, existing: 0, invalid: 0 });
    const { rows } = await sql<{ users: string; emails: string; distinct_users: string }>`
      SELECT (SELECT count(*) FROM users WHERE email LIKE 'member%') AS users,
             (SELECT count(*) FROM outbox WHERE job_name = 'email-verification') AS emails,
             (SELECT count(DISTINCT payload ->> 'userId') FROM outbox WHERE job_name = 'email-verification') AS distinct_users`.execute(
      api.deps.db,
    );
    t.same(rows[0], { users: String(IMPORT_ROWS), emails: String(IMPORT_ROWS), distinct_users: String(IMPORT_ROWS) });
    t.equal(smtp.received.length, 0, 'no email went out while the queue was paused');
    await emailQueue.resume();
    const received = await smtp.waitForEmails(IMPORT_ROWS, 60000);
    t.equal(new Set(received.flatMap((e) => e.to)).size, IMPORT_ROWS, 'one email per created user');
    t.equal(received.length, IMPORT_ROWS, 'and no second one');
  });

  t.test('cancel a running export from this (api) process: failed `cancelled` within ~2 s, no file', async (t) => {
    // The worker spawned by the import test is still running.
    const jobId = await post(api, '/admin/exports/orders', { format: 'ndjson' });
    await waitForRows(api, jobId, 100);
    const asked = Date.now();
    const res = await api.app.inject({ method: 'POST', url: `/admin/jobs/batch/${jobId}/cancel`, headers: bearer });
    t.equal(res.statusCode, 202);
    t.match(res.json(), { jobId, status: 'cancelling' });
    const failed = await waitForState(api, jobId, 'failed', 10000);
    const tookMs = Date.now() - asked;
    t.ok(tookMs < 2500, `stopped ${tookMs} ms after the request`);
    t.equal(failed.failedReason, 'cancelled');
    t.match(failed, { attemptsMade: 1 }, 'no retry');
    const { rows } = await sql<{ chunks: string }>`SELECT count(*) AS chunks FROM batch_export_chunks WHERE job_id = ${jobId}`.execute(
      api.deps.db,
    );
    t.equal(rows[0].chunks, '0', 'partial output deleted');
    t.equal((await api.app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer })).statusCode, 404);
    t.equal(
      (await api.app.inject({ method: 'POST', url: `/admin/jobs/batch/${jobId}/cancel`, headers: bearer })).statusCode,
      409,
      'already finished',
    );
  });
});
