import t from 'tap';
import { sql } from 'kysely';
import { deleteOldDeliveryTokens, recordEmailEvents } from '../../src/db/suppressions.js';
import { MAINTENANCE_QUEUE, MAINTENANCE_SCHEDULER_ID, RETENTION_JOB } from '../../src/maintenance/jobs.js';
import { startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const errand = await startTestErrand(
  t,
  testEnv(t, { RETENTION_DAYS: '30', RETENTION_BATCH_SIZE: '2', EMAIL_SOFT_BOUNCE_LIMIT: '3', EMAIL_SOFT_BOUNCE_WINDOW_DAYS: '7' }),
);
const { deps } = errand;
const db = deps.db;

const rowCount = async (table: string) =>
  Number((await sql<{ n: string }>`select count(*) as n from ${sql.table(table)}`.execute(db)).rows[0].n);

async function runRetentionJob(jobId: string, retentionDays: number) {
  const job = await deps.queues[MAINTENANCE_QUEUE].add(RETENTION_JOB, { retentionDays, batchSize: 2 }, { jobId });
  await waitFor(async () => ((await job.getState()) === 'completed' ? true : undefined), 20000, `${jobId} completed`);
  const done = await deps.queues[MAINTENANCE_QUEUE].getJob(jobId);
  return done!.returnvalue as { deleted: Record<string, number> };
}

t.test('the daily maintenance scheduler exists', async (t) => {
  const scheduler = await deps.queues[MAINTENANCE_QUEUE].getJobScheduler(MAINTENANCE_SCHEDULER_ID);
  t.ok(scheduler, 'scheduler maintenance');
  t.equal(scheduler?.name, RETENTION_JOB);
});

t.test('retention deletes rows older than RETENTION_DAYS in batches and leaves recent ones', async (t) => {
  const old = sql<Date>`now() - interval '31 days'`;
  const recent = sql<Date>`now() - interval '29 days'`;
  const user = await db.insertInto('users').values({ email: 'r@example.com', name: null }).returning('id').executeTakeFirstOrThrow();
  for (const [when, label] of [
    [old, 'old'],
    [recent, 'recent'],
  ] as const) {
    for (let i = 0; i < 5; i += 1) {
      await db
        .insertInto('outbox')
        .values({
          queue: 'email',
          job_name: 'email-verification',
          payload: JSON.stringify({ userId: user.id }),
          created_at: when,
          published_at: when,
        })
        .execute();
      await db
        .insertInto('sent_emails')
        .values({ job_id: `${label}-${i}`, sent_at: when })
        .execute();
      await db
        .insertInto('payment_events')
        .values({
          event_id: `evt_${label}_${i}`,
          type: 'payment.failed',
          provider_ref: 'pay_x',
          order_id: null,
          transitioned: false,
          received_at: when,
        })
        .execute();
      await db
        .insertInto('email_verification_tokens')
        .values({
          token_hash: Buffer.from(`${label}-used-${i}`),
          user_id: user.id,
          expires_at: sql<Date>`now() + interval '1 day'`,
          used_at: when,
        })
        .execute();
      await db
        .insertInto('email_verification_tokens')
        .values({ token_hash: Buffer.from(`${label}-expired-${i}`), user_id: user.id, expires_at: when, used_at: null })
        .execute();
      // Soft bounces too: at 29 and 31 days they are far outside the 7-day window.
      await sql`insert into email_events (provider, event_id, email, kind, occurred_at, received_at)
        values ('sendgrid', ${`${label}-${i}`}, ${`${label}-${i}@example.com`}, ${i % 2 === 0 ? 'hard_bounce' : 'soft_bounce'}, ${when}, ${when})`.execute(
        db,
      );
      await sql`insert into email_webhook_tokens (provider, token, signed_at) values ('mailgun', ${`${label}-${i}`}, ${when})`.execute(db);
      await sql`insert into cancelled_jobs (queue, job_id, cancelled_at) values ('email', ${`outbox-${label}-${i}`}, ${when})`.execute(db);
    }
  }
  for (const [when, label] of [
    [old, 'old'],
    [recent, 'recent'],
  ] as const) {
    await sql`insert into batch_jobs (job_id, kind, updated_at) values (${`batch-${label}`}, 'orders-export', ${when})`.execute(db);
  }
  // Never deleted, whatever the age: an unpublished outbox row and an unused, unexpired token.
  await db
    .insertInto('outbox')
    .values({
      queue: 'email',
      job_name: 'email-verification',
      payload: JSON.stringify({ userId: user.id }),
      created_at: old,
      published_at: null,
      failures: 99,
    })
    .execute();
  await db
    .insertInto('email_verification_tokens')
    .values({
      token_hash: Buffer.from('live'),
      user_id: user.id,
      expires_at: sql<Date>`now() + interval '1 day'`,
      used_at: null,
      created_at: old,
    })
    .execute();
  // The suppression list is never pruned.
  await sql`insert into suppressions (email, reason, source, created_at) values ('old-0@example.com', 'hard-bounce', 'sendgrid', ${old})`.execute(
    db,
  );

  const done = await runRetentionJob('retention-test', 30);
  t.same(
    done.deleted,
    {
      outbox: 5,
      sentEmails: 5,
      paymentEvents: 5,
      verificationTokens: 10,
      signupThrottle: 0,
      emailEvents: 5,
      emailDeliveryTokens: 5,
      cancelledJobs: 5,
      batchJobs: 1,
    },
    'counts in the result',
  );
  t.same(
    (await sql<{ job_id: string }>`select job_id from batch_jobs`.execute(db)).rows,
    [{ job_id: 'batch-recent' }],
    'the recent batch job stays',
  );

  const count = async (table: 'outbox' | 'sent_emails' | 'payment_events' | 'email_verification_tokens') =>
    Number(
      (
        await db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  t.equal(await count('outbox'), 6, 'recent published rows and the unpublished one stay');
  t.equal(await count('sent_emails'), 5);
  t.equal(await count('payment_events'), 5);
  t.equal(await count('email_verification_tokens'), 11, 'recent used/expired tokens and the live one stay');
  t.same(
    (await sql<{ event_id: string }>`select event_id from email_events order by event_id`.execute(db)).rows.map((row) => row.event_id),
    ['recent-0', 'recent-1', 'recent-2', 'recent-3', 'recent-4'],
    'the old email events went, the recent ones stay',
  );
  t.equal(await rowCount('email_webhook_tokens'), 5, 'the recent delivery tokens stay');
  t.same(
    (await sql<{ job_id: string }>`select job_id from cancelled_jobs order by job_id`.execute(db)).rows.map((row) => row.job_id),
    ['outbox-recent-0', 'outbox-recent-1', 'outbox-recent-2', 'outbox-recent-3', 'outbox-recent-4'],
    'the old cancel markers went, the recent ones stay',
  );
  t.equal(await rowCount('suppressions'), 1, 'a suppression older than RETENTION_DAYS stays');
  t.ok(
    errand.logs.lines().some((line) => line.msg === 'retention finished'),
    'a log line',
  );
  const metrics = await errand.app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /errand_retention_deleted_rows_total\{table="verificationTokens"\} 10/);
  t.match(metrics.body, /errand_retention_deleted_rows_total\{table="emailEvents"\} 5/);
  t.match(metrics.body, /errand_retention_deleted_rows_total\{table="cancelledJobs"\} 5/);
});

t.test('soft bounces inside the window outlive a shorter RETENTION_DAYS and still count toward the limit', async (t) => {
  const email = 'soft@example.com';
  const event = async (eventId: string, address: string, kind: string, daysAgo: number) =>
    sql`insert into email_events (provider, event_id, email, kind, occurred_at, received_at)
      values ('sendgrid', ${eventId}, ${address}, ${kind}, now() - make_interval(days => ${daysAgo}), now() - make_interval(days => ${daysAgo}))`.execute(
      db,
    );
  // Three days old: older than RETENTION_DAYS (1), inside the 7-day window. Two of the limit of three.
  await event('window-1', email, 'soft_bounce', 3);
  await event('window-2', email, 'soft_bounce', 3);
  // A hard bounce as old (kept only to spot a repeat) and a soft bounce outside the window: both go.
  await event('hard-3d', 'hard@example.com', 'hard_bounce', 3);
  await event('soft-8d', 'other@example.com', 'soft_bounce', 8);

  const done = await runRetentionJob('retention-short', 1);
  t.equal(done.deleted.emailEvents, 7, 'the five left from above (outside the window), the hard bounce and the old soft bounce');
  t.same(
    (await sql<{ event_id: string }>`select event_id from email_events order by event_id`.execute(db)).rows.map((row) => row.event_id),
    ['window-1', 'window-2'],
    'only the soft bounces inside the window stay',
  );
  t.equal(await rowCount('suppressions'), 1, 'the suppression stays, now far older than RETENTION_DAYS');

  const policy = { limit: errand.config.EMAIL_SOFT_BOUNCE_LIMIT, windowDays: errand.config.EMAIL_SOFT_BOUNCE_WINDOW_DAYS };
  const third = await recordEmailEvents(
    db,
    [{ provider: 'sendgrid', eventId: 'window-3', email, kind: 'soft_bounce', at: new Date() }],
    policy,
  );
  t.match(third, { replayed: false, suppressed: [{ email, reason: 'soft-bounces' }] }, 'the kept two and a new one reach the limit');
});

t.test('delivery tokens are kept while a replay could still carry them, whatever the cutoff', async (t) => {
  await sql`delete from email_webhook_tokens`.execute(db);
  await sql`insert into email_webhook_tokens (provider, token, signed_at) values
    ('mailgun', 'fresh', now() - interval '1 minute'), ('mailgun', 'stale', now() - interval '20 minutes')`.execute(db);
  t.equal(await deleteOldDeliveryTokens(db, new Date(Date.now() + 60_000), 10), 1, 'a cutoff in the future deletes only the stale one');
  t.same(
    (await sql<{ token: string }>`select token from email_webhook_tokens`.execute(db)).rows,
    [{ token: 'fresh' }],
    'the fresh token stays',
  );
});
