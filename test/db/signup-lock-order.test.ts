import t from 'tap';
import { createDataLayer } from '../../src/db/pool.js';
import { outboxJob } from '../../src/db/outbox.js';
import { signupUsersStatement } from '../../src/db/signup-user.js';
import { EMAIL_VERIFICATION_JOB, emailQueue } from '../../src/email/jobs.js';
import { signupThrottleKey } from '../../src/signup/throttle.js';
import { freshDatabaseUrl } from '../support/helpers.js';

// The lock order stated in src/db/signup-user.ts: user rows by email, then throttle rows by key, each in collate "C"
// order. Two statements (two batches, or two processes) holding the same addresses in opposite orders must queue
// behind each other, never deadlock. The statement is raced bare (no batcher: its retry-alone would hide a deadlock).
const url = freshDatabaseUrl(t);
const data = createDataLayer(url, { poolMax: 4 });
t.teardown(() => data.destroy());
const signupUsers = signupUsersStatement(data, outboxJob(emailQueue, EMAIL_VERIFICATION_JOB));
const rowsOf = (emails: string[]) =>
  emails.map((email) => ({ email, name: null, throttleKey: signupThrottleKey(email), traceContext: null }));

t.test('concurrent signups of overlapping addresses in different orders never deadlock', async (t) => {
  for (let round = 0; round < 40; round += 1) {
    // Mixed case and tags: collate "C" and the throttle keys (victim+N share one) order them, not the input.
    const emails = Array.from({ length: 100 }, (_, i) => `r${round}-${i % 2 ? 'B' : 'a'}${i}+t${i % 3}@lock.example`.toLowerCase());
    const forward = rowsOf(emails);
    const backward = rowsOf([...emails].reverse());
    const shuffled = rowsOf([...emails].sort(() => Math.random() - 0.5));
    const results = await Promise.allSettled([signupUsers(forward), signupUsers(backward), signupUsers(shuffled)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.same(
      failed.map((r) => (r.reason as { code?: string }).code),
      [],
      `round ${round}: no statement failed (40P01 would be a deadlock)`,
    );
  }
  const { count } = await data.db
    .selectFrom('outbox')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .executeTakeFirstOrThrow();
  t.ok(Number(count) > 0, 'the statements queued emails');
});
