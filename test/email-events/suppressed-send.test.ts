import t from 'tap';
import { putSuppression } from '../../src/db/suppressions.js';
import { insertOrder } from '../../src/db/orders.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// The worker's side of the suppression list: a suppressed address gets no email, the others still do.
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, ADMIN_TOKEN: 'suppressed-send-admin-token-0123456789' }));
const { app, deps } = errand;

const signup = (email: string) => app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
const emailJobs = async () => {
  const jobs = await deps.queues.email.getJobs(['completed']);
  return jobs.map((job) => ({ name: job.name, result: job.returnvalue as unknown }));
};

t.test('a suppressed address (any case) gets no email; the job completes with {suppressed, reason}', async (t) => {
  await putSuppression(deps.db, 'Bounced@Example.com');
  const blocked = await signup('bounced@example.COM');
  t.equal(blocked.statusCode, 202, 'the signup still answers 202 (no enumeration)');
  t.equal((await signup('fine@example.com')).statusCode, 202);

  const [delivered] = await smtp.waitForEmails(1);
  t.same(delivered.to, ['fine@example.com']);
  const jobs = await waitFor(
    async () => {
      const done = await emailJobs();
      return done.length >= 2 ? done : undefined;
    },
    20000,
    'both email jobs to complete',
  );
  t.same(
    jobs.map((job) => job.result).filter((result) => (result as { suppressed?: boolean }).suppressed),
    [{ sent: false, suppressed: true, reason: 'manual' }],
    'the suppressed job completed without sending, saying why',
  );
  t.equal(smtp.attempts, 1, 'SMTP saw only the other address');
  const line = errand.logs.lines().find((entry) => entry.msg === 'email suppressed');
  t.ok(line, 'one log line says so');
  t.notOk(JSON.stringify(line).includes('bounced@example.com'), 'with the address masked');
  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /^errand_emails_suppressed_total 1$/m);
});

t.test('the tracking email of a paid order for a suppressed address is not sent either', async (t) => {
  await putSuppression(deps.db, 'Buyer@Example.com');
  const order = await insertOrder(deps.db, {
    email: 'buyer@example.com',
    amount: 500,
    currency: 'EUR',
    providerRef: 'ref-suppressed-buyer',
  });
  await deps.db.updateTable('orders').set({ status: 'paid', paid_at: new Date() }).where('id', '=', order.id).execute();
  const job = await deps.queues.email.add('order-tracking-link', { orderId: order.id }, { jobId: 'tracking-suppressed' });
  const result = await waitFor(
    async () => ((await job.isCompleted()) ? ((await deps.queues.email.getJob(job.id!))?.returnvalue as unknown) : undefined),
    20000,
    'the tracking job to complete',
  );
  t.same(result, { sent: false, suppressed: true, reason: 'manual' }, 'completed without sending, saying why');
  t.equal(smtp.attempts, 1, "SMTP still saw only the first test's one email");
});

t.test('lifting the suppression lets the next email go out', async (t) => {
  const lifted = await app.inject({
    method: 'DELETE',
    url: '/admin/suppressions/bounced@example.com',
    headers: { authorization: 'Bearer suppressed-send-admin-token-0123456789' },
  });
  t.equal(lifted.statusCode, 204);
  // The per-address signup throttle (60 s) would hold a second signup back: queue the email directly instead.
  const user = await deps.db.selectFrom('users').select('id').where('email', '=', 'bounced@example.com').executeTakeFirstOrThrow();
  await deps.queues.email.add('email-verification', { userId: user.id }, { jobId: 'after-lift' });
  const emails = await smtp.waitForEmails(2);
  t.same(emails[1].to, ['bounced@example.com']);
});
