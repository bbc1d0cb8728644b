import t from 'tap';
import { UnrecoverableError, type Job } from 'bullmq';
import { checkPayload, dispatchJobs } from '../../src/core/job-registry.js';
import { emailQueue } from '../../src/email/jobs.js';
import { jobForRow } from '../../src/outbox/producer.js';

const fakeJob = (name: string, data: unknown) => ({ name, data, id: 'j1' }) as unknown as Job;

t.test('the worker boundary refuses an undeclared job name or a payload off its schema, unrecoverably', async (t) => {
  t.throws(() => checkPayload(emailQueue, 'no-such-job', {}), UnrecoverableError);
  t.throws(() => checkPayload(emailQueue, 'email-verification', { userId: 12 }), UnrecoverableError);
  t.throws(() => checkPayload(emailQueue, 'email-verification', { userId: '1', extra: true }), UnrecoverableError);
  t.throws(
    () => checkPayload(emailQueue, 'order-tracking-link', { orderId: 'not-a-uuid' }),
    /invalid order-tracking-link payload: \/orderId/,
  );
  t.doesNotThrow(() => checkPayload(emailQueue, 'email-verification', { userId: '1' }));
});

t.test('dispatch runs the processor of the job name with the checked payload', async (t) => {
  const calls: string[] = [];
  const run = dispatchJobs(emailQueue, {
    'email-verification': async (data) => calls.push(`verification ${data.userId}`),
    'order-tracking-link': async (data) => calls.push(`tracking ${data.orderId}`),
  });
  await run(fakeJob('email-verification', { userId: '7' }));
  await run(fakeJob('order-tracking-link', { orderId: '0b7e2b1c-9a1e-4d3f-8c2a-1e2f3a4b5c6d' }));
  await t.rejects(run(fakeJob('email-verification', {})), UnrecoverableError);
  t.same(calls, ['verification 7', 'tracking 0b7e2b1c-9a1e-4d3f-8c2a-1e2f3a4b5c6d']);
});

t.test("an outbox row is added with its stable job id and its job declaration's priority", async (t) => {
  const row = { id: '42', queue: 'email', job_name: 'email-verification', payload: { userId: '1' } };
  t.same(jobForRow(row), { name: 'email-verification', data: { userId: '1' }, opts: { jobId: 'outbox-42', priority: 1 } });
  t.same(
    jobForRow({ ...row, job_name: 'order-tracking-link' }).opts,
    { jobId: 'outbox-42' },
    'tracking emails carry no priority: they run first',
  );
});
