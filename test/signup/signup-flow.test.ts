import t from 'tap';
import { sql } from 'kysely';
import { hashToken } from '../../src/signup/tokens.js';
import { extractLink, startSmtpServer, startTestErrand, testEnv, waitFor, waitForOutboxDrained } from '../support/helpers.js';

const smtp = await startSmtpServer(t);
const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url }));
const { app, deps } = errand;

async function signup(body: unknown) {
  return app.inject({ method: 'POST', url: '/auth/signup', payload: body as object });
}

t.test('signup sends one verification email whose link verifies once', async (t) => {
  const res = await signup({ email: 'Alice@Example.com', name: 'Alice' });
  t.equal(res.statusCode, 202);
  t.same(res.json(), { status: 'accepted' });

  const [email] = await smtp.waitForEmails(1);
  t.same(email.to, ['alice@example.com'], 'delivered to the normalised address');
  t.notMatch(email.text, /Alice\b/, 'the name typed at signup is not in the email');
  const link = new URL(extractLink(email.text, '/auth/verify-email?token='));
  t.equal(link.origin, 'http://errand.test', 'link built from PUBLIC_BASE_URL');
  const token = link.searchParams.get('token')!;
  t.ok(token.length >= 43, 'token carries at least 32 random bytes');
  t.ok(email.html.includes(link.pathname), 'html part carries the link too');

  const stored = await deps.db.selectFrom('email_verification_tokens').selectAll().execute();
  t.equal(stored.length, 1);
  t.same(stored[0].token_hash, hashToken(token), 'only the hash is stored');

  const verify = await app.inject({ method: 'GET', url: `${link.pathname}${link.search}` });
  t.equal(verify.statusCode, 200);
  t.same(verify.json(), { status: 'verified' });
  const user = await deps.db.selectFrom('users').select('verified_at').where('email', '=', 'alice@example.com').executeTakeFirstOrThrow();
  t.ok(user.verified_at, 'user marked verified');

  const again = await app.inject({ method: 'GET', url: `${link.pathname}${link.search}` });
  t.equal(again.statusCode, 400, 'token is single use');
  t.match(again.json(), { statusCode: 400, error: 'Bad Request' });

  // A verified address still gets 202, and no email: no outbox row, so nothing can be sent later either.
  const outboxRows = async () => (await deps.db.selectFrom('outbox').select('id').execute()).length;
  const rowsBefore = await outboxRows();
  const verifiedAgain = await signup({ email: 'alice@example.com' });
  t.equal(verifiedAgain.statusCode, 202);
  t.same(verifiedAgain.json(), { status: 'accepted' });
  t.equal(await outboxRows(), rowsBefore, 'no job queued for a verified address');
  await waitForOutboxDrained(deps);
  t.equal(smtp.received.filter((e) => e.to[0] === 'alice@example.com').length, 1, 'no email for a verified address');
});

t.test('a verification email carries no text the requester chose besides the address', async (t) => {
  // Anyone may sign up any address: a free-text name would carry their words to its inbox under errand's name.
  const name = '<a href=http://evil>click</a> WIN MONEY';
  const res = await signup({ email: 'victim@example.com', name });
  t.equal(res.statusCode, 202);
  const email = await waitFor(() => smtp.received.find((e) => e.to[0] === 'victim@example.com'), 10000, 'victim email');
  for (const [part, text] of Object.entries({ subject: email.subject, text: email.text, html: email.html })) {
    for (const piece of ['evil', 'click', 'WIN MONEY', 'href=http', '&lt;a']) t.notOk(text.includes(piece), `${part} has no ${piece}`);
  }
  t.match(email.text, /Hello,/);
  t.ok(email.text.includes('/auth/verify-email?token='), 'the link is there');
});

t.test('an unknown or expired token answers 400', async (t) => {
  const unknown = await app.inject({ method: 'GET', url: '/auth/verify-email?token=nope' });
  t.equal(unknown.statusCode, 400);

  await signup({ email: 'late@example.com' });
  const emails = await waitFor(() => smtp.received.filter((e) => e.to[0] === 'late@example.com').at(0), 10000, 'late email');
  const link = new URL(extractLink(emails.text, '/auth/verify-email?token='));
  await deps.db
    .updateTable('email_verification_tokens')
    .set({ expires_at: sql`now() - interval '1 second'` })
    .where('token_hash', '=', hashToken(link.searchParams.get('token')!))
    .execute();
  const expired = await app.inject({ method: 'GET', url: `${link.pathname}${link.search}` });
  t.equal(expired.statusCode, 400, 'expired token refused');
  const user = await deps.db.selectFrom('users').select('verified_at').where('email', '=', 'late@example.com').executeTakeFirstOrThrow();
  t.equal(user.verified_at, null, 'user stays unverified');
});

t.test('an unverified address gets at most one email per 60 s; a newer token leaves the older one valid', async (t) => {
  const address = 'twice@example.com';
  const [first, second] = await Promise.all([signup({ email: address }), signup({ email: address })]);
  t.equal(first.statusCode, 202);
  t.equal(second.statusCode, 202);
  t.equal((await signup({ email: address })).statusCode, 202);
  const firstEmail = await waitFor(() => smtp.received.find((e) => e.to[0] === address), 10000, 'first email');
  const user = await deps.db.selectFrom('users').select('id').where('email', '=', address).executeTakeFirstOrThrow();
  const jobs = await deps.db
    .selectFrom('outbox')
    .select('id')
    .where(sql<string>`payload->>'userId'`, '=', user.id)
    .execute();
  t.equal(jobs.length, 1, 'one job queued for three signups within 60 s');
  await waitForOutboxDrained(deps);
  t.equal(smtp.received.filter((e) => e.to[0] === address).length, 1, 'one email within 60 s');

  // Past the throttle window a new email (and token) is sent.
  await deps.db
    .updateTable('users')
    .set({ verification_requested_at: sql`now() - interval '61 seconds'` })
    .where('email', '=', address)
    .execute();
  await deps.db
    .updateTable('signup_throttle')
    .set({ last_queued_at: sql`now() - interval '61 seconds'` })
    .where('address_key', '=', address)
    .execute();
  t.equal((await signup({ email: address })).statusCode, 202);
  await waitFor(() => smtp.received.filter((e) => e.to[0] === address).length === 2 || undefined, 10000, 'second email');
  const olderLink = new URL(extractLink(firstEmail.text, '/auth/verify-email?token='));
  const verify = await app.inject({ method: 'GET', url: `${olderLink.pathname}${olderLink.search}` });
  t.equal(verify.statusCode, 200, 'the older, unexpired token still verifies');
});
