import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { WEBHOOK_SECRET, createOrder, paymentEvent, sendWebhook } from '../support/payments.js';

const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
const { app, deps } = errand;
const emailWorker = errand.workers.find((worker) => worker.name === EMAIL_QUEUE)!;

t.test('a tracking email overtakes a backlog of verification emails', async (t) => {
  // Hold the worker so a backlog builds up, as under a signup flood.
  await emailWorker.pause();
  for (let i = 0; i < 20; i += 1) {
    const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: `flood-${i}@example.com` } });
    t.equal(res.statusCode, 202);
  }
  const order = await createOrder(app, { email: 'customer@example.com' });
  t.equal((await sendWebhook(app, paymentEvent(order))).statusCode, 200);
  await waitFor(async () => ((await deps.queues[EMAIL_QUEUE].getJobCountByTypes('wait', 'prioritized')) === 21 ? true : undefined), 10000, '21 jobs waiting');

  emailWorker.resume();
  const emails = await smtp.waitForEmails(21, 30000);
  t.same(emails[0]!.to, ['customer@example.com'], 'the paid customer first, though queued last');
});
