import t from 'tap';
import { sql } from 'kysely';
import { createDataLayer, type DataLayer } from '../../src/db/pool.js';
import { outboxJob } from '../../src/db/outbox.js';
import { prepareSignupUser as prepareSignupStatement } from '../../src/db/signup-user.js';
import { EMAIL_VERIFICATION_JOB, emailQueue } from '../../src/email/jobs.js';
import { signupThrottleKey } from '../../src/signup/throttle.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

// The statement as the signup route calls it: the verification job, and the throttle key of each address.
const prepareSignupUser = (data: DataLayer) => {
  const signup = prepareSignupStatement(data, outboxJob(emailQueue, EMAIL_VERIFICATION_JOB));
  return (user: { email: string; name: string | null }) => signup({ ...user, throttleKey: signupThrottleKey(user.email) });
};

// ROLE=api: no worker or relay touches the outbox while the statement is examined.
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { db } = errand.deps;
const signupUser = prepareSignupUser(errand.deps.data);

t.test('compiled once, each call binds its own values', async (t) => {
  const a = await signupUser({ email: 'a@example.com', name: 'Ann' });
  const b = await signupUser({ email: 'b@example.com', name: null });
  const users = await db
    .selectFrom('users')
    .select(['id', 'email', 'name'])
    .where('email', 'in', ['a@example.com', 'b@example.com'])
    .orderBy('email')
    .execute();
  t.same(
    users.map((u) => [u.email, u.name]),
    [
      ['a@example.com', 'Ann'],
      ['b@example.com', null],
    ],
  );
  t.same(
    [a?.payload, b?.payload],
    users.map((u) => ({ userId: u.id })),
    "each outbox row carries its own user's id",
  );
  t.match(a, { queue: 'email', job_name: 'email-verification' });
});

t.test('concurrent signups of one address: one user, one outbox row, however many callers', async (t) => {
  const rows = await Promise.all(Array.from({ length: 20 }, () => signupUser({ email: 'race@example.com', name: null })));
  t.equal(rows.filter(Boolean).length, 1, 'exactly one caller gets an email to send');
  const outbox = await db
    .selectFrom('outbox')
    .select('payload')
    .where(sql<boolean>`payload->>'userId' = (select id::text from users where email = 'race@example.com')`)
    .execute();
  t.equal(outbox.length, 1, 'one outbox row for the address');
});

t.test('a verified address, or one emailed under 60 s ago, gets no row; past 60 s it gets one', async (t) => {
  await signupUser({ email: 'done@example.com', name: null });
  await db
    .updateTable('users')
    .set({ verified_at: sql`now()`, verification_requested_at: sql`now() - interval '1 day'` })
    .where('email', '=', 'done@example.com')
    .execute();
  t.equal(await signupUser({ email: 'done@example.com', name: null }), undefined, 'verified: nothing queued');

  await signupUser({ email: 'wait@example.com', name: null });
  t.equal(await signupUser({ email: 'wait@example.com', name: null }), undefined, 'within 60 s: nothing queued');
  await db
    .updateTable('users')
    .set({ verification_requested_at: sql`now() - interval '61 seconds'` })
    .where('email', '=', 'wait@example.com')
    .execute();
  await db
    .updateTable('signup_throttle')
    .set({ last_queued_at: sql`now() - interval '61 seconds'` })
    .where('address_key', '=', 'wait@example.com')
    .execute();
  t.ok(await signupUser({ email: 'wait@example.com', name: 'Changed' }), 'after 60 s: queued again');
  const user = await db.selectFrom('users').select('name').where('email', '=', 'wait@example.com').executeTakeFirstOrThrow();
  t.equal(user.name, null, 'a repeat signup never changes the name');
});

t.test('a named prepared statement: PostgreSQL parses and plans it once per connection', async (t) => {
  // One connection, so the session that ran the signup is the one asked about its prepared statements.
  const singleData = createDataLayer(errand.config.DATABASE_URL, { poolMax: 1 });
  const single = singleData.db;
  t.teardown(() => singleData.destroy());
  const signupOnSingle = prepareSignupUser(singleData);
  await signupOnSingle({ email: 'prepared-1@example.com', name: null });
  await signupOnSingle({ email: 'prepared-2@example.com', name: null });
  const { rows } = await sql<{ name: string; statement: string }>`select name, statement from pg_prepared_statements`.execute(single);
  const signupStatements = rows.filter((row) => row.statement.includes('signup_throttle'));
  t.equal(signupStatements.length, 1, 'the signup statement is prepared once, and reused by the second call');
  t.match(signupStatements[0]?.name, /^errand_[0-9a-f]{24}$/);
  const users = await single.selectFrom('users').select('email').where('email', 'like', 'prepared-%').orderBy('email').execute();
  t.same(
    users.map((u) => u.email),
    ['prepared-1@example.com', 'prepared-2@example.com'],
    'each call bound its own values',
  );
});

t.test('concurrent signups share statements and each still gets its own answer', async (t) => {
  // Set up one verified address and one emailed a moment ago, then send a burst in one turn.
  await signupUser({ email: 'burst-verified@example.com', name: null });
  await db
    .updateTable('users')
    .set({ verified_at: sql`now()` })
    .where('email', '=', 'burst-verified@example.com')
    .execute();
  await signupUser({ email: 'burst-recent@example.com', name: null });
  const burst = [
    'burst-new-1@example.com',
    'burst-verified@example.com',
    'burst-new-2@example.com',
    'burst-recent@example.com',
    'burst-new-1@example.com', // the same address twice in one burst: one email
    'victim+1@burst.example', // two tags of one address share the throttle: one email
    'victim+2@burst.example',
  ];
  const answers = await Promise.all(burst.map((email) => signupUser({ email, name: null })));
  const emailed = burst.filter((_, i) => answers[i] !== undefined);
  t.same(
    emailed.filter((email) => !email.startsWith('victim')),
    ['burst-new-1@example.com', 'burst-new-2@example.com'],
    'new addresses get an email, once each; verified and recently emailed ones do not',
  );
  t.equal(emailed.filter((email) => email.startsWith('victim')).length, 1, 'one of two tags of an address gets the email');

  const users = await db.selectFrom('users').select(['id', 'email']).where('email', 'in', emailed).execute();
  const idOf = new Map(users.map((u) => [u.email, u.id]));
  t.same(
    emailed.map((email) => answers[burst.indexOf(email)]?.payload),
    emailed.map((email) => ({ userId: idOf.get(email) })),
    "each caller's outbox row names its own user",
  );
  const rows = await db
    .selectFrom('outbox')
    .select(sql<string>`payload->>'userId'`.as('userId'))
    .where(sql<boolean>`payload->>'userId' = any(${[...idOf.values()]}::text[])`)
    .execute();
  t.equal(rows.length, emailed.length, 'one outbox row per email due, none for the others');
});
