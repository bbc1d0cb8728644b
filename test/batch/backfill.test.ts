import t from 'tap';
import { sql } from 'kysely';
import { startSmtpServer, startTestErrand, testEnv, waitFor, type TestErrand } from '../support/helpers.js';
import { createOrder, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function runBackfill(errand: TestErrand, since: string) {
  const res = await errand.app.inject({ method: 'POST', url: '/admin/backfills/tracking-links', headers: bearer, payload: { since } });
  if (res.statusCode !== 202) throw new Error(`backfill answered ${res.statusCode}: ${res.body}`);
  const { jobId } = res.json<{ jobId: string }>();
  return waitFor(
    async () => {
      const view = (await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer })).json<{
        state: string;
        result: unknown;
      }>();
      return view.state === 'completed' ? view.result : undefined;
    },
    30000,
    'backfill completed',
  );
}

async function trackingJobsPerOrder(errand: TestErrand) {
  const { rows } = await sql<{ order_id: string; jobs: string }>`
    SELECT payload ->> 'orderId' AS order_id, count(*) AS jobs FROM outbox WHERE job_name = 'order-tracking-link' GROUP BY 1`.execute(
    errand.deps.db,
  );
  return Object.fromEntries(rows.map((r) => [r.order_id, Number(r.jobs)]));
}

t.test('tracking-links backfill queues each missing email once, and nothing on a second run', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(
    t,
    testEnv(t, { ROLE: 'all', ADMIN_TOKEN, SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, BATCH_CHUNK_ROWS: '2' }),
  );
  const { app, deps } = errand;

  // sent: paid through the webhook, its email went out.
  const sent = await createOrder(app, { email: 'sent@example.com' });
  t.equal((await sendWebhook(app, paymentEvent(sent))).statusCode, 200);
  await smtp.waitForEmails(1);
  // refused: paid through the webhook while the SMTP server refused its recipient for good.
  smtp.respondWith((to) => (to.includes('refused@example.com') ? { code: 550, message: 'mailbox unavailable' } : undefined));
  const refused = await createOrder(app, { email: 'refused@example.com' });
  t.equal((await sendWebhook(app, paymentEvent(refused))).statusCode, 200);
  await waitFor(async () => ((await deps.queues.email.getFailedCount()) === 1 ? true : undefined), 15000, 'the refused email to fail');
  smtp.respondWith(undefined);
  // never: marked paid without any email queued (e.g. by hand in the database).
  const never = await createOrder(app, { email: 'never@example.com' });
  await deps.db
    .updateTable('orders')
    .set({ status: 'paid', paid_at: sql<Date>`now()` })
    .where('id', '=', never.id)
    .execute();
  // old: paid before `since`; pending: not paid.
  const old = await createOrder(app, { email: 'old@example.com' });
  await deps.db
    .updateTable('orders')
    .set({ status: 'paid', paid_at: new Date('2020-01-01T00:00:00Z') })
    .where('id', '=', old.id)
    .execute();
  await createOrder(app, { email: 'pending@example.com' });

  const since = '2025-01-01T00:00:00Z';
  t.same(await runBackfill(errand, since), { orders: 3, queued: 2, skipped: 1 });
  const emails = await smtp.waitForEmails(3);
  t.same(
    emails
      .slice(1)
      .flatMap((e) => e.to)
      .sort(),
    ['never@example.com', 'refused@example.com'],
  );
  t.same(await trackingJobsPerOrder(errand), { [sent.id]: 1, [refused.id]: 2, [never.id]: 1 });

  t.same(await runBackfill(errand, since), { orders: 3, queued: 0, skipped: 3 }, 'second run');
  t.same(await trackingJobsPerOrder(errand), { [sent.id]: 1, [refused.id]: 2, [never.id]: 1 }, 'nothing more queued');

  const bad = await app.inject({
    method: 'POST',
    url: '/admin/backfills/tracking-links',
    headers: bearer,
    payload: { since: 'last week' },
  });
  t.equal(bad.statusCode, 400);
});

t.test('an order paid and emailed 40 days ago gets no second email from a backfill after retention pruned its records', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(
    t,
    testEnv(t, { ROLE: 'all', ADMIN_TOKEN, SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }),
  );
  const { app, deps } = errand;
  const order = await createOrder(app, { email: 'loyal@example.com' });
  t.equal((await sendWebhook(app, paymentEvent(order))).statusCode, 200);
  await smtp.waitForEmails(1);
  await waitFor(async () => ((await deps.queues.email.getCompletedCount()) === 1 ? true : undefined), 15000, 'the email job completed');
  const queuedAt = await deps.db
    .selectFrom('orders')
    .select('tracking_email_queued_at')
    .where('id', '=', order.id)
    .executeTakeFirstOrThrow();
  t.ok(queuedAt.tracking_email_queued_at, 'the settle statement stamped the order');

  // 40 days later: the completed job has long left Redis (kept 24 h), and every record of the send is 40 days old.
  await deps.queues.email.clean(0, 1000, 'completed');
  const ago = sql<Date>`now() - interval '40 days'`;
  await deps.db.updateTable('orders').set({ paid_at: ago, tracking_email_queued_at: ago }).where('id', '=', order.id).execute();
  await deps.db.updateTable('outbox').set({ created_at: ago, published_at: ago }).execute();
  await deps.db.updateTable('sent_emails').set({ sent_at: ago }).execute();

  const since = '2020-01-01T00:00:00Z';
  t.same(await runBackfill(errand, since), { orders: 1, queued: 0, skipped: 1 }, 'before retention');
  const { runRetention } = await import('../../src/maintenance/retention.js');
  const retention = await runRetention(deps.db, deps.log, {
    retentionDays: 30,
    softBounceWindowDays: deps.config.EMAIL_SOFT_BOUNCE_WINDOW_DAYS,
    batchSize: 100,
  });
  t.match(retention.deleted, { outbox: 1, sentEmails: 1 }, 'retention pruned the outbox row and the send record');
  t.same(await runBackfill(errand, since), { orders: 1, queued: 0, skipped: 1 }, 'after retention');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(smtp.received.length, 1, 'one email in all');
});
