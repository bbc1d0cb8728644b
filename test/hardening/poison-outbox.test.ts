import t from 'tap';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// Batch size 1: without skipping, the poison row at the lowest id would be all the relay ever looks at.
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, OUTBOX_RELAY_BATCH_SIZE: '1', OUTBOX_MAX_FAILURES: '3', OUTBOX_RELAY_INTERVAL_MS: '50' }));
const { deps } = errand;

t.test('a poison outbox row at the lowest id is skipped after N failures; the rows behind it flow', async (t) => {
  const user = await deps.db.insertInto('users').values({ email: 'behind@example.com', name: null }).returning('id').executeTakeFirstOrThrow();
  // As after a rollback of a release that had a queue this one lacks.
  const poison = await deps.db.insertInto('outbox').values({ queue: 'no-such-queue', job_name: 'x', payload: JSON.stringify({}) }).returning('id').executeTakeFirstOrThrow();
  await deps.db.insertInto('outbox').values({ queue: 'email', job_name: 'email-verification', payload: JSON.stringify({ userId: user.id }) }).execute();

  const [email] = await smtp.waitForEmails(1, 30000);
  t.same(email!.to, ['behind@example.com'], 'the row behind the poison row was published and sent');

  const row = await deps.db.selectFrom('outbox').select(['failures', 'last_error', 'published_at']).where('id', '=', poison.id).executeTakeFirstOrThrow();
  t.equal(row.failures, 3, 'failures counted up to OUTBOX_MAX_FAILURES, then left alone');
  t.equal(row.published_at, null);
  t.match(row.last_error, /unknown queue no-such-queue/);
  const errors = errand.logs.lines().filter((line) => line.level === 50 && line.outboxId === poison.id);
  t.equal(errors.length, 1, 'one error line when it is skipped');
  const metrics = await errand.app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /errand_outbox_rows_skipped_total\{queue="no-such-queue"\} 1/);
  await waitFor(async () => {
    const again = await deps.db.selectFrom('outbox').select('failures').where('id', '=', poison.id).executeTakeFirstOrThrow();
    return again.failures === 3 ? true : undefined;
  }, 1000, 'failures stay at 3');
});
