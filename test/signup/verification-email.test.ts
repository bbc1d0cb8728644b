import t from 'tap';
import { sql } from 'kysely';
import { composeVerificationEmail } from '../../src/signup/verification-email.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

// The composer alone (ROLE=api: no worker runs it on its own): what the email job reads and stores before sending.
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { db } = errand.deps;
const compose = composeVerificationEmail({ statements: errand.deps.statements, config: errand.config });
const job = {} as Parameters<typeof compose>[1];
const tokensOf = async (userId: string) =>
  Number(
    (
      await db
        .selectFrom('email_verification_tokens')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('user_id', '=', userId)
        .executeTakeFirstOrThrow()
    ).n,
  );
const newUser = (email: string, name: string | null) =>
  db.insertInto('users').values({ email, name }).returning('id').executeTakeFirstOrThrow();

t.test('an unverified user: one token stored, the email goes to the address with a link carrying the token', async (t) => {
  const { id } = await newUser('unverified@example.com', 'Una');
  const email = await compose({ userId: id }, job);
  t.equal(email?.to, 'unverified@example.com');
  t.match(email?.text, /^Hello,\n/, 'no name: the requester chose it (CONTRACT.md)');
  t.notOk(`${email?.subject} ${email?.text} ${email?.html}`.includes('Una'), 'the stored name is in no part');
  t.match(email?.text, /\/auth\/verify-email\?token=[A-Za-z0-9_-]{20,}/);
  t.equal(await tokensOf(id), 1, 'one token row for this send');
});

t.test('a verified user: nothing to send, no token stored', async (t) => {
  const { id } = await newUser('verified@example.com', null);
  await db
    .updateTable('users')
    .set({ verified_at: sql`now()` })
    .where('id', '=', id)
    .execute();
  t.equal(await compose({ userId: id }, job), null);
  t.equal(await tokensOf(id), 0);
});

t.test('a user that no longer exists: nothing to send', async (t) => {
  t.equal(await compose({ userId: '999999999' }, job), null);
  const { n } = await db
    .selectFrom('email_verification_tokens')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('user_id', '=', '999999999')
    .executeTakeFirstOrThrow();
  t.equal(Number(n), 0);
});

t.test('jobs composed at once share the statement; an id past bigint range fails none of them', async (t) => {
  const users = await Promise.all(['c1@example.com', 'c2@example.com', 'c3@example.com'].map((email) => newUser(email, null)));
  const emails = await Promise.all([
    ...users.map((u) => compose({ userId: u.id }, job)),
    compose({ userId: '99999999999999999999999' }, job),
    compose({ userId: users[0].id }, job), // the same user twice at once: two tokens, two emails, as one at a time
  ]);
  t.same(
    emails.map((e) => e?.to ?? null),
    ['c1@example.com', 'c2@example.com', 'c3@example.com', null, 'c1@example.com'],
  );
  t.equal(await tokensOf(users[0].id), 2);
});
