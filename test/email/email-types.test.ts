import t from 'tap';
import { Type } from 'typebox';
import type { Queue } from 'bullmq';
import { defineQueue } from '../../src/core/job-registry.js';
import { createQueueWorker } from '../../src/core/job-registry.js';
import { createEmailComposers } from '../../src/email/composers.js';
import { emailQueue } from '../../src/email/jobs.js';
import { emailProcessors } from '../../src/email/worker.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// Adding an email type (docs/ARCHITECTURE.md, "Adding an email type"), done in the test alone: a registry line, a
// template and a composer. The worker names no job: it runs the new type from the registry and the composers record.
const welcomeQueue = defineQueue({
  ...emailQueue,
  jobs: { ...emailQueue.jobs, welcome: { payload: Type.Object({ name: Type.String() }, { additionalProperties: false }) } },
});
const welcomeTemplate = (to: string, name: string) => ({ to, subject: `Welcome, ${name}`, text: `Hello ${name}\n`, html: `<p>Hello</p>` });

t.test('a new email type runs from its registry line and its composer, with the send path of every email', async (t) => {
  const smtp = await startSmtpServer(t);
  // ROLE=api: no worker of errand's own takes the job; the test's worker runs the extended registry.
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', SMTP_URL: smtp.url }));
  const { deps } = errand;
  const processors = emailProcessors(
    deps,
    { ...createEmailComposers(deps), welcome: async (data) => welcomeTemplate('new@example.org', data.name) },
    welcomeQueue,
  );
  t.same(Object.keys(processors).sort(), Object.keys(welcomeQueue.jobs).sort(), 'one processor per registry job name');

  const worker = createQueueWorker(welcomeQueue, processors, errand.config, deps.workerRedis);
  t.teardown(() => worker.close());
  const queue = deps.queues.email as unknown as Queue;
  const job = await queue.add('welcome', { name: 'Ada' }, { jobId: 'welcome-1' });
  const [email] = await smtp.waitForEmails(1, 15000);
  t.equal(email.subject, 'Welcome, Ada');
  t.same(email.to, ['new@example.org']);
  await waitFor(async () => ((await job.isCompleted()) ? true : undefined), 15000, 'the welcome job to complete');
  const sent = await deps.db.selectFrom('sent_emails').select('job_id').where('job_id', '=', 'welcome-1').execute();
  t.equal(sent.length, 1, 'recorded in sent_emails like every email');

  // @ts-expect-error a registry job without its composer does not compile
  t.ok(() => emailProcessors(deps, createEmailComposers(deps), welcomeQueue));
});
