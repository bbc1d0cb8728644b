import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

t.test('EMAIL_CONCURRENCY: that many emails in flight at once, never more', async (t) => {
  const smtp = await startSmtpServer(t);
  // Replies held long enough that every email the worker may start is in flight together.
  smtp.delayReplies(1500);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, EMAIL_CONCURRENCY: '3', EMAIL_RATE_MAX: '100', EMAIL_RATE_DURATION_MS: '10' }));
  for (let i = 0; i < 6; i++) {
    t.equal((await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `parallel${i}@example.com` } })).statusCode, 202);
  }
  await waitFor(() => smtp.inFlight >= 3 || undefined, 20000, 'three emails in flight');
  await smtp.waitForEmails(6, 30000);
  t.equal(smtp.maxInFlight, 3, 'three at once, never four');
});

t.test('JOB_ATTEMPTS and JOB_BACKOFF_MS: a temporary SMTP failure is tried that many times, then the job fails', async (t) => {
  const smtp = await startSmtpServer(t);
  smtp.respondWith(() => ({ code: 450, message: '4.2.0 mailbox busy' }));
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, JOB_ATTEMPTS: '4', JOB_BACKOFF_MS: '20' }));
  t.equal((await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'busy@example.com' } })).statusCode, 202);
  const queue = errand.deps.queues[EMAIL_QUEUE];
  const row = await waitFor(() => errand.deps.db.selectFrom('outbox').select('id').executeTakeFirst(), 10000, 'the outbox row');
  const jobId = `outbox-${row.id}`;
  await waitFor(async () => ((await queue.getJobState(jobId)) === 'failed' ? true : undefined), 30000, 'the job to fail');
  t.equal((await queue.getJob(jobId))!.attemptsMade, 4, 'four attempts');
  t.equal(smtp.attempts, 4, 'four SMTP attempts, no fifth');
  // The backoff is exponential from JOB_BACKOFF_MS: not a performance bound, only the declared shape.
  t.same(queue.defaultJobOptions.backoff, { type: 'exponential', delay: 20 });
});

t.test('finished jobs and the events stream are capped (constants, not configuration)', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const queue = errand.deps.queues[EMAIL_QUEUE];
  t.same(queue.defaultJobOptions.removeOnComplete, { age: 24 * 3600, count: 1000 });
  t.equal(queue.opts.streams?.events.maxLen, 1000, 'events stream capped');
});

t.test('with the default limiter (1 per 150 ms), 5 emails take at least 600 ms', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, EMAIL_RATE_MAX: '1', EMAIL_RATE_DURATION_MS: '150' }));
  const started = performance.now();
  for (let i = 0; i < 5; i++) {
    const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `limited${i}@example.com` } });
    t.equal(res.statusCode, 202);
  }
  await smtp.waitForEmails(5, 20000);
  const elapsed = performance.now() - started;
  // Job k cannot start before 150 ms x (k - 1) after the first: the 5th waits >= 600 ms.
  t.ok(elapsed >= 600, `5 emails took ${elapsed.toFixed(0)} ms`);
});
