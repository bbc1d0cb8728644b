import t from 'tap';
import { BATCH_QUEUE, MAINTENANCE_QUEUE, EMAIL_QUEUE, PAYMENTS_RECONCILE_QUEUE } from '../../src/queues.js';
import { secretsEqual } from '../../src/ops/auth.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

t.test('secretsEqual compares whatever the lengths', async (t) => {
  t.ok(secretsEqual('abc', 'abc'));
  t.notOk(secretsEqual('abc', 'abcd'));
  t.notOk(secretsEqual('', 'abc'));
});

t.test('ADMIN_TOKEN unset: the admin routes and the board do not exist', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  for (const [method, url] of [['GET', '/admin/queues'], ['GET', '/admin/queues/email/failed'], ['POST', '/admin/sweeps'], ['GET', '/admin/board']] as const) {
    const res = await errand.app.inject({ method, url, headers: bearer });
    t.equal(res.statusCode, 404, `${method} ${url}`);
  }
});

t.test('admin API and board', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', SMTP_URL: smtp.url, ADMIN_TOKEN }));
  const { app, deps } = errand;
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 10000, 'ready');

  t.test('401 without or with a wrong token', async (t) => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: ADMIN_TOKEN }, basic('admin', ADMIN_TOKEN)]) {
      for (const [method, url] of [['GET', '/admin/queues'], ['GET', '/admin/queues/email/failed'], ['POST', '/admin/queues/email/jobs/1/retry'], ['POST', '/admin/sweeps']] as const) {
        const res = await app.inject({ method, url, headers });
        t.equal(res.statusCode, 401, `${method} ${url} with ${JSON.stringify(headers)}`);
        t.match(res.json(), { statusCode: 401, error: 'Unauthorized' });
        t.match(res.headers['www-authenticate'], /^Bearer/);
      }
    }
    t.equal((await app.inject({ method: 'GET', url: '/admin/queues/nope/failed' })).statusCode, 401, 'auth comes before 404');
  });

  t.test('GET /admin/queues lists counts and schedulers of every queue', async (t) => {
    await deps.queues[PAYMENTS_RECONCILE_QUEUE].upsertJobScheduler('test-scheduler', { pattern: '0 * * * *' }, { name: 'payments-sweep', data: { secret: 'x' } });
    t.teardown(() => deps.queues[PAYMENTS_RECONCILE_QUEUE].removeJobScheduler('test-scheduler'));
    const res = await app.inject({ method: 'GET', url: '/admin/queues', headers: bearer });
    t.equal(res.statusCode, 200);
    const body = res.json() as { queues: { name: string; counts: Record<string, number>; schedulers: Record<string, unknown>[] }[] };
    t.same(body.queues.map((q) => q.name).sort(), [EMAIL_QUEUE, PAYMENTS_RECONCILE_QUEUE, BATCH_QUEUE, MAINTENANCE_QUEUE].sort());
    for (const queue of body.queues) {
      t.same(queue.counts, await deps.queues[queue.name as typeof EMAIL_QUEUE].getJobCounts(), `${queue.name} counts`);
    }
    const reconcile = body.queues.find((q) => q.name === PAYMENTS_RECONCILE_QUEUE)!;
    t.match(reconcile.schedulers, [{ id: 'test-scheduler', name: 'payments-sweep', pattern: '0 * * * *' }]);
    t.notOk(res.body.includes('secret'), 'scheduler template data left out');
  });

  t.test('a permanently failed email shows in the failed list and is retried', async (t) => {
    const unknown = await app.inject({ method: 'GET', url: '/admin/queues/nope/failed', headers: bearer });
    t.equal(unknown.statusCode, 404);
    t.match(unknown.json(), { statusCode: 404, error: 'Not Found' });

    smtp.respondWith(() => ({ code: 550, message: 'mailbox unavailable' }));
    t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'bounce@example.com' } })).statusCode, 202);
    const failed = await waitFor(
      async () => {
        const res = await app.inject({ method: 'GET', url: '/admin/queues/email/failed', headers: bearer });
        const body = res.json() as { total: number; jobs: Record<string, unknown>[] };
        return body.total === 1 ? body : undefined;
      },
      30000,
      'a failed job',
    );
    const [job] = failed.jobs;
    t.match(job, { name: 'email-verification', failedReason: /550|mailbox unavailable/, attemptsMade: 1 });
    // The contract's field names.
    t.match(job, { id: String, name: 'email-verification', reason: /550|mailbox unavailable/, attempts: 1, time: /^\d{4}-\d\d-\d\dT/ });
    t.type(job!.id, 'string');
    t.type(job!.timestamp, 'number');
    t.type(job!.finishedOn, 'number');
    t.notOk('data' in job!, 'no job data');
    t.equal(smtp.received.length, 0);
    const page = await app.inject({ method: 'GET', url: '/admin/queues/email/failed?start=0&limit=10', headers: bearer });
    t.equal(page.statusCode, 200, 'paging parameters');
    t.equal((page.json() as { jobs: unknown[] }).jobs.length, 1);
    t.equal((await app.inject({ method: 'GET', url: '/admin/queues/email/failed?start=1', headers: bearer })).json().jobs.length, 0, 'start skips');
    for (const query of ['limit=0', 'limit=5000', 'limit=abc', 'start=-1', 'other=1']) {
      t.equal((await app.inject({ method: 'GET', url: `/admin/queues/email/failed?${query}`, headers: bearer })).statusCode, 400, query);
    }

    t.equal((await app.inject({ method: 'POST', url: '/admin/queues/nope/jobs/1/retry', headers: bearer })).statusCode, 404, 'unknown queue');
    t.equal((await app.inject({ method: 'POST', url: '/admin/queues/email/jobs/missing/retry', headers: bearer })).statusCode, 404, 'unknown job');

    smtp.respondWith(undefined);
    const retry = await app.inject({ method: 'POST', url: `/admin/queues/email/jobs/${job!.id as string}/retry`, headers: bearer });
    t.equal(retry.statusCode, 200);
    t.match(retry.json(), { jobId: job!.id, status: 'retried' });
    const [email] = await smtp.waitForEmails(1, 30000);
    t.same(email!.to, ['bounce@example.com']);
    await waitFor(async () => ((await deps.queues[EMAIL_QUEUE].getJob(job!.id as string))?.finishedOn ? true : undefined), 10000, 'completed');
    t.equal(await (await deps.queues[EMAIL_QUEUE].getJob(job!.id as string))!.getState(), 'completed');

    const again = await app.inject({ method: 'POST', url: `/admin/queues/email/jobs/${job!.id as string}/retry`, headers: bearer });
    t.equal(again.statusCode, 404, 'a job that is not failed is not retried');
    t.match(again.json().message, /not failed/);
  });

  t.test('POST /admin/sweeps queues a one-off sweep', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/admin/sweeps', headers: bearer });
    t.equal(res.statusCode, 202);
    const { jobId } = res.json() as { jobId: string };
    t.match(jobId, /^sweep-[0-9TZ]+-[0-9a-f]+$/, 'a custom id: no colon, not all digits');
    const job = await deps.queues[PAYMENTS_RECONCILE_QUEUE].getJob(jobId);
    t.equal(job?.name, 'payments-sweep');
    t.same(job?.data, { windowHours: 24, limit: 200 });
    const second = (await app.inject({ method: 'POST', url: '/admin/sweeps', headers: bearer })).json() as { jobId: string };
    t.not(second.jobId, jobId, 'each request queues its own sweep');
  });

  t.test('Bull Board behind HTTP Basic', async (t) => {
    const none = await app.inject({ method: 'GET', url: '/admin/board' });
    t.equal(none.statusCode, 401);
    t.match(none.headers['www-authenticate'], /^Basic realm=/);
    t.equal((await app.inject({ method: 'GET', url: '/admin/board', headers: basic('ops', 'wrong-password') })).statusCode, 401);
    t.equal((await app.inject({ method: 'GET', url: '/admin/board', headers: bearer })).statusCode, 401, 'bearer is not basic');
    t.equal((await app.inject({ method: 'GET', url: '/admin/board/api/queues', headers: {} })).statusCode, 401, 'board API protected too');

    const page = await app.inject({ method: 'GET', url: '/admin/board', headers: basic('anyone', ADMIN_TOKEN) });
    t.equal(page.statusCode, 200);
    t.match(page.headers['content-type'], /text\/html/);
    t.match(page.body, /\/admin\/board/);
    const api = await app.inject({ method: 'GET', url: '/admin/board/api/queues', headers: basic('', ADMIN_TOKEN) });
    t.equal(api.statusCode, 200);
    const names = (api.json() as { queues: { name: string }[] }).queues.map((q) => q.name).sort();
    t.same(names, [EMAIL_QUEUE, PAYMENTS_RECONCILE_QUEUE, BATCH_QUEUE, MAINTENANCE_QUEUE].sort());
  });
});
