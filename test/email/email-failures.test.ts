import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { outboxJobId } from '../../src/outbox/producer.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, JOB_ATTEMPTS: '3', JOB_BACKOFF_MS: '50' }));
const { app, deps } = errand;
const queue = deps.queues[EMAIL_QUEUE];

// Per-address scripts: the n-th attempt for an address gets the n-th reply (undefined = accept).
const scripts = new Map<string, ({ code: number; message: string } | undefined)[]>();
const attemptsByAddress = new Map<string, number[]>();
smtp.respondWith((to) => {
  const address = to[0]!;
  const seen = attemptsByAddress.get(address) ?? [];
  seen.push(Date.now());
  attemptsByAddress.set(address, seen);
  return scripts.get(address)?.[seen.length - 1];
});

async function signupJob(email: string) {
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
  if (res.statusCode !== 202) throw new Error(`signup answered ${res.statusCode}`);
  const user = await deps.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow();
  const outbox = await deps.db.selectFrom('outbox').select(['id', 'payload']).execute();
  const mine = outbox.find((o) => (o.payload as { userId: string }).userId === user.id)!;
  return outboxJobId(mine.id);
}

t.test('SMTP 451 is retried with backoff and delivered', async (t) => {
  const email = 'temp@example.com';
  scripts.set(email, [{ code: 451, message: '4.3.0 Temporary local problem' }]);
  const jobId = await signupJob(email);
  await waitFor(() => smtp.received.find((e) => e.to[0] === email), 15000, 'delivery after retry');
  const job = await waitFor(async () => ((await queue.getJob(jobId))?.finishedOn ? queue.getJob(jobId) : undefined), 5000, 'job completion');
  t.equal(await job!.getState(), 'completed');
  // BullMQ 6 counts the successful attempt too.
  t.equal(job!.attemptsMade, 2, 'one failed attempt, then the successful one');
  t.equal(attemptsByAddress.get(email)!.length, 2, 'two SMTP attempts');
});

t.test('SMTP 550 fails at once, without burning retries, reason kept', async (t) => {
  const email = 'nobody@example.com';
  scripts.set(email, [{ code: 550, message: `5.1.1 <${email}>: Recipient address rejected` }, undefined, undefined]);
  const jobId = await signupJob(email);
  await waitFor(async () => ((await queue.getJobState(jobId)) === 'failed' ? true : undefined), 15000, 'job to fail');
  const job = (await queue.getJob(jobId))!;
  t.equal(job.attemptsMade, 1, 'one attempt only');
  t.match(job.failedReason, /550/, 'reason names the SMTP reply');
  t.notOk(job.failedReason.includes(email), 'the address quoted in the reply is masked');
  t.match(job.failedReason, /n\*\*\*@example\.com/);
  t.notOk(errand.logs.raw.some((line) => line.includes(email)), 'no log line carries it');
  // 'failed' is final: nothing retries the job from here.
  t.equal(attemptsByAddress.get(email)!.length, 1, 'not retried');
  t.notOk(smtp.received.find((e) => e.to[0] === email));
});

t.test('a throttle reply rate-limits the queue; the job is delivered later without spending an attempt', async (t) => {
  const email = 'throttled@example.com';
  scripts.set(email, [{ code: 451, message: '4.7.1 Rate limit exceeded, try again in 1 seconds' }]);
  const jobId = await signupJob(email);
  await waitFor(() => smtp.received.find((e) => e.to[0] === email), 15000, 'delivery after throttle');
  const [throttledAt, deliveredAt] = attemptsByAddress.get(email)!;
  // The reply asked for 1 s; allow a little clock slack in the other direction only.
  t.ok(deliveredAt! - throttledAt! >= 900, `waited ${deliveredAt! - throttledAt!} ms as the server asked`);
  const job = await waitFor(async () => ((await queue.getJob(jobId))?.finishedOn ? queue.getJob(jobId) : undefined), 5000, 'job completion');
  t.equal(job!.attemptsStarted, 2, 'the job ran twice');
  t.equal(job!.attemptsMade, 1, 'only the successful run counts as an attempt');
  t.ok(errand.logs.lines().some((l) => l.msg === 'SMTP server throttled us; pausing the email queue' && l.pauseMs === 1000), 'pause logged with the hinted duration');
});
