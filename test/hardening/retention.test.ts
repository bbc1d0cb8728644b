import t from 'tap';
import { sql } from 'kysely';
import { MAINTENANCE_QUEUE, MAINTENANCE_SCHEDULER_ID, RETENTION_JOB } from '../../src/maintenance/jobs.js';
import { startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const errand = await startTestErrand(t, testEnv(t, { RETENTION_DAYS: '30', RETENTION_BATCH_SIZE: '2' }));
const { deps } = errand;
const db = deps.db;

t.test('the daily maintenance scheduler exists', async (t) => {
  const scheduler = await deps.queues[MAINTENANCE_QUEUE].getJobScheduler(MAINTENANCE_SCHEDULER_ID);
  t.ok(scheduler, 'scheduler maintenance');
  t.equal(scheduler?.name, RETENTION_JOB);
});

t.test('retention deletes rows older than RETENTION_DAYS in batches and leaves recent ones', async (t) => {
  const old = sql<Date>`now() - interval '31 days'`;
  const recent = sql<Date>`now() - interval '29 days'`;
  const user = await db.insertInto('users').values({ email: 'r@example.com', name: null }).returning('id').executeTakeFirstOrThrow();
  for (const [when, label] of [[old, 'old'], [recent, 'recent']] as const) {
    for (let i = 0; i < 5; i += 1) {
      await db.insertInto('outbox').values({ queue: 'email', job_name: 'email-verification', payload: JSON.stringify({ userId: user.id }), created_at: when, published_at: when }).execute();
      await db.insertInto('sent_emails').values({ job_id: `${label}-${i}`, sent_at: when }).execute();
      await db.insertInto('payment_events').values({ event_id: `evt_${label}_${i}`, type: 'payment.failed', provider_ref: 'pay_x', order_id: null, transitioned: false, received_at: when }).execute();
      await db.insertInto('email_verification_tokens').values({ token_hash: Buffer.from(`${label}-used-${i}`), user_id: user.id, expires_at: sql<Date>`now() + interval '1 day'`, used_at: when }).execute();
      await db.insertInto('email_verification_tokens').values({ token_hash: Buffer.from(`${label}-expired-${i}`), user_id: user.id, expires_at: when, used_at: null }).execute();
    }
  }
  for (const [when, label] of [[old, 'old'], [recent, 'recent']] as const) {
    await sql`insert into batch_jobs (job_id, kind, updated_at) values (${`batch-${label}`}, 'orders-export', ${when})`.execute(db);
  }
  // Never deleted, whatever the age: an unpublished outbox row and an unused, unexpired token.
  await db.insertInto('outbox').values({ queue: 'email', job_name: 'email-verification', payload: JSON.stringify({ userId: user.id }), created_at: old, published_at: null, failures: 99 }).execute();
  await db.insertInto('email_verification_tokens').values({ token_hash: Buffer.from('live'), user_id: user.id, expires_at: sql<Date>`now() + interval '1 day'`, used_at: null, created_at: old }).execute();

  const job = await deps.queues[MAINTENANCE_QUEUE].add(RETENTION_JOB, { retentionDays: 30, batchSize: 2 }, { jobId: 'retention-test' });
  await waitFor(async () => ((await job.getState()) === 'completed' ? true : undefined), 20000, 'retention completed');
  const done = await deps.queues[MAINTENANCE_QUEUE].getJob('retention-test');
  t.same(done!.returnvalue.deleted, { outbox: 5, sentEmails: 5, paymentEvents: 5, verificationTokens: 10, signupThrottle: 0, batchJobs: 1 }, 'counts in the result');
  t.same((await sql<{ job_id: string }>`select job_id from batch_jobs`.execute(db)).rows, [{ job_id: 'batch-recent' }], 'the recent batch job stays');

  const count = async (table: 'outbox' | 'sent_emails' | 'payment_events' | 'email_verification_tokens') =>
    Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n);
  t.equal(await count('outbox'), 6, 'recent published rows and the unpublished one stay');
  t.equal(await count('sent_emails'), 5);
  t.equal(await count('payment_events'), 5);
  t.equal(await count('email_verification_tokens'), 11, 'recent used/expired tokens and the live one stay');
  t.ok(errand.logs.lines().some((line) => line.msg === 'retention finished'), 'a log line');
  const metrics = await errand.app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /errand_retention_deleted_rows_total\{table="verificationTokens"\} 10/);
});
