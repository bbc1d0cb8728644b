import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startSmtpServer, startTestErrand, testEnv } from '../support/helpers.js';

t.test('the email worker and queue carry the configured options', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { EMAIL_CONCURRENCY: '3', EMAIL_RATE_MAX: '7', EMAIL_RATE_DURATION_MS: '250', JOB_ATTEMPTS: '4', JOB_BACKOFF_MS: '1234' }));
  const worker = errand.workers.find((w) => w.name === EMAIL_QUEUE)!;
  t.ok(worker, 'an email worker runs in role all');
  t.equal(worker.opts.concurrency, 3);
  t.same(worker.opts.limiter, { max: 7, duration: 250 });
  t.same(worker.opts.removeOnComplete, { age: 24 * 3600, count: 1000 });

  const queue = errand.deps.queues[EMAIL_QUEUE];
  t.same(queue.defaultJobOptions.attempts, 4);
  t.same(queue.defaultJobOptions.backoff, { type: 'exponential', delay: 1234 });
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
