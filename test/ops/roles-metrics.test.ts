import t from 'tap';
import { sql } from 'kysely';
import { EMAIL_QUEUE, QUEUE_NAMES } from '../../src/queues.js';
import { sleep, startSmtpServer, startTestErrand, testEnv, waitFor, type TestErrand } from '../support/helpers.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';

async function scrape(errand: TestErrand) {
  const res = await errand.app.inject({ method: 'GET', url: '/metrics' });
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`);
  if (!String(res.headers['content-type']).startsWith('text/plain')) throw new Error(`content-type ${res.headers['content-type']}`);
  return parsePrometheus(res.body);
}

t.test('role api: serves HTTP and publishes, but runs no worker', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', SMTP_URL: smtp.url, ADMIN_TOKEN }));
  t.equal(errand.workers.length, 0, 'no workers');

  const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'api-only@example.com' } });
  t.equal(res.statusCode, 202);
  // Marks are written in batches shortly after the publish (src/outbox/outbox.ts).
  const row = await waitFor(
    async () => {
      const found = await errand.deps.db.selectFrom('outbox').select(['id', 'published_at']).executeTakeFirstOrThrow();
      return found.published_at ? found : undefined;
    },
    2000,
    'outbox row marked published',
  );
  t.ok(row.published_at, 'the outbox row was published after commit');
  const job = await errand.deps.queues[EMAIL_QUEUE].getJob(`outbox-${row.id}`);
  // Verification emails are prioritised below tracking emails, so a waiting one sits in BullMQ's 'prioritized' state.
  t.equal(await job?.getState(), 'prioritized', 'the job is waiting');
  // No worker connection on the queue at all (BullMQ names its worker connections): nobody can work it.
  t.same(await errand.deps.queues[EMAIL_QUEUE].getWorkers(), [], 'no worker on the email queue');
  t.equal(smtp.attempts, 0, 'no email sent');

  t.test('queue depth gauges match getJobCounts', async (t) => {
    const samples = await scrape(errand);
    for (const name of QUEUE_NAMES) {
      const counts = await errand.deps.queues[name].getJobCounts();
      for (const [state, count] of Object.entries(counts)) {
        t.equal(sampleValue(samples, 'errand_queue_jobs', { queue: name, state }), count, `${name} ${state}`);
      }
    }
    t.equal(sampleValue(samples, 'errand_queue_jobs', { queue: EMAIL_QUEUE, state: 'prioritized' }), 1);
  });

  t.test('outbox backlog gauges', async (t) => {
    let samples = await scrape(errand);
    t.equal(sampleValue(samples, 'errand_outbox_unpublished_rows'), 0);
    t.equal(sampleValue(samples, 'errand_outbox_oldest_unpublished_age_seconds'), 0);
    // No relay runs in the api role, so a stuck row stays stuck.
    await errand.deps.db
      .insertInto('outbox')
      .values({ queue: EMAIL_QUEUE, job_name: 'email-verification', payload: JSON.stringify({ userId: '1' }), created_at: sql<Date>`now() - interval '10 minutes'` })
      .execute();
    // Three relay intervals (100 ms each, grace 0): a relay, if one ran, would have published it by now.
    await sleep(300);
    samples = await scrape(errand);
    t.equal(sampleValue(samples, 'errand_outbox_unpublished_rows'), 1);
    const age = sampleValue(samples, 'errand_outbox_oldest_unpublished_age_seconds')!;
    t.ok(age >= 600 && age < 3600, `oldest age ${age}s`);
  });

  t.test('HTTP durations are labelled by route pattern, process metrics present', async (t) => {
    await errand.app.inject({ method: 'GET', url: '/auth/verify-email?token=nope' });
    await errand.app.inject({ method: 'GET', url: '/no/such/path/123' });
    const samples = await scrape(errand);
    t.equal(sampleValue(samples, 'errand_http_request_duration_seconds_count', { route: '/auth/signup', method: 'POST', status_code: '202' }), 1);
    t.equal(sampleValue(samples, 'errand_http_request_duration_seconds_count', { route: '/auth/verify-email', status_code: '400' }), 1);
    t.equal(sampleValue(samples, 'errand_http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' }), 1, 'unknown paths share one label');
    t.notOk(samples.some((s) => s.labels.route?.includes('token=') || s.labels.route?.includes('/no/such')), 'never the raw URL');
    t.ok(sampleValue(samples, 'process_cpu_user_seconds_total') !== undefined, 'default process metrics');
    t.ok(sampleValue(samples, 'nodejs_heap_size_used_bytes') !== undefined, 'default node metrics');
  });
});

t.test('role worker: workers and relay, only /healthz, /readyz and /metrics', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'worker', ADMIN_TOKEN }));
  t.ok(errand.workers.length >= 1, 'runs workers');
  t.equal((await errand.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  await waitFor(async () => (await errand.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 10000, 'ready');
  t.equal((await errand.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
  t.equal((await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'w@example.com' } })).statusCode, 404);
  t.equal((await errand.app.inject({ method: 'GET', url: '/auth/verify-email?token=x' })).statusCode, 404);
  const admin = await errand.app.inject({ method: 'GET', url: '/admin/queues', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  t.equal(admin.statusCode, 404, 'no admin routes in the worker role');
});

t.test('role all: serves, works, and the job counters move', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', SMTP_URL: smtp.url }));
  t.ok(errand.workers.length >= 1);
  const before = await scrape(errand);
  t.equal(sampleValue(before, 'errand_jobs_completed_total', { queue: EMAIL_QUEUE, name: 'email-verification' }) ?? 0, 0);

  t.equal((await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'all@example.com' } })).statusCode, 202);
  await smtp.waitForEmails(1, 30000);
  const samples = await waitFor(
    async () => {
      const current = await scrape(errand);
      return sampleValue(current, 'errand_jobs_completed_total', { queue: EMAIL_QUEUE, name: 'email-verification' }) === 1 ? current : undefined;
    },
    15000,
    'completed counter',
  );
  t.equal(sampleValue(samples, 'errand_job_duration_seconds_count', { queue: EMAIL_QUEUE, name: 'email-verification', status: 'completed' }), 1);
  t.equal(sampleValue(samples, 'errand_jobs_failed_total', { queue: EMAIL_QUEUE }) ?? 0, 0);
  t.equal(sampleValue(samples, 'errand_queue_jobs', { queue: EMAIL_QUEUE, state: 'completed' }), 1);

  // A permanent SMTP refusal moves the failed counter.
  smtp.respondWith(() => ({ code: 550, message: 'no such mailbox' }));
  t.equal((await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'bounce@example.com' } })).statusCode, 202);
  const failed = await waitFor(
    async () => {
      const current = await scrape(errand);
      return (sampleValue(current, 'errand_jobs_failed_total', { queue: EMAIL_QUEUE, name: 'email-verification' }) ?? 0) >= 1 ? current : undefined;
    },
    30000,
    'failed counter',
  );
  t.equal(sampleValue(failed, 'errand_job_duration_seconds_count', { queue: EMAIL_QUEUE, status: 'failed' }), 1);
  t.equal(sampleValue(failed, 'errand_queue_jobs', { queue: EMAIL_QUEUE, state: 'failed' }), 1);
});
