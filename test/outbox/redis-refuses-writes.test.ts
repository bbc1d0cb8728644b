import t from 'tap';
import { Redis } from 'ioredis';
import { startPrivateRedis, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const MAX_FAILURES = 3;
const RELAY_INTERVAL_MS = 100;

t.test('a row the relay meets while Redis is out of memory is kept, and published once Redis takes writes again', async (t) => {
  const redis = await startPrivateRedis(t);
  const admin = new Redis(redis.url);
  t.teardown(() => admin.disconnect());
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(
    t,
    testEnv(t, {
      REDIS_URL: redis.url,
      SMTP_URL: smtp.url,
      OUTBOX_MAX_FAILURES: String(MAX_FAILURES),
      OUTBOX_RELAY_INTERVAL_MS: String(RELAY_INTERVAL_MS),
    }),
  );
  const { deps } = errand;

  // Every write now fails with "OOM command not allowed", on a connection that stays `ready`.
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  const signup = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'oom@example.com' } });
  t.equal(signup.statusCode, 202, 'accepted while Redis refuses writes');
  const [row] = await deps.db.selectFrom('outbox').select(['id', 'published_at']).execute();
  t.equal(row.published_at, null, 'its job waits in the outbox');

  // The relay has met the refusal (it says so whether it blames Redis or the row)...
  const refused = new Set(['outbox relay could not publish; will retry', 'outbox row could not be published; will retry']);
  await waitFor(() => errand.logs.lines().some((l) => refused.has(String(l.msg))) || undefined, 5000, 'a relay pass refused by Redis');
  // ...and keeps meeting it for far longer than MAX_FAILURES passes at RELAY_INTERVAL_MS take (~0.3 s).
  const outageMs = 10 * MAX_FAILURES * RELAY_INTERVAL_MS;
  await new Promise((resolve) => setTimeout(resolve, outageMs));
  t.equal(deps.redis.status, 'ready', 'the connection stayed ready throughout');
  const during = await deps.db.selectFrom('outbox').select(['failures', 'published_at']).where('id', '=', row.id).executeTakeFirstOrThrow();
  t.equal(during.failures, 0, 'no failure counted against the row: Redis, not the row, refused');

  await admin.config('SET', 'maxmemory', '0');
  const [email] = await smtp.waitForEmails(1, 30000);
  t.same(email.to, ['oom@example.com'], 'the job was published after Redis recovered, and ran');
  const after = await deps.db.selectFrom('outbox').select(['failures', 'published_at']).where('id', '=', row.id).executeTakeFirstOrThrow();
  t.ok(after.published_at, 'the row is marked published');
  t.equal(after.failures, 0);
  t.equal(errand.logs.lines().filter((l) => l.msg?.toString().startsWith('outbox row skipped')).length, 0, 'never skipped');
});
