import t from 'tap';
import { sql } from 'kysely';
import { createDataLayer } from '../../src/db/pool.js';
import { createSentEmails } from '../../src/db/sent-emails.js';
import { createSuppressionCheck } from '../../src/db/suppressions.js';
import { insertOrder, prepareFindOrders } from '../../src/db/orders.js';
import { prepareStoreVerificationToken } from '../../src/db/verification-tokens.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

// The statements an email job runs besides its send (ROLE=api: no worker runs jobs beside the test).
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));

t.test('the email worker statements are named prepared statements: parsed and planned once per connection', async (t) => {
  // One connection, so the session that ran the statements is the one asked about its prepared statements.
  const singleData = createDataLayer(errand.config.DATABASE_URL, { poolMax: 1 });
  const single = singleData.db;
  t.teardown(() => singleData.destroy());
  const sentEmails = createSentEmails(singleData);
  const storeToken = prepareStoreVerificationToken(singleData);
  const findOrder = prepareFindOrders(singleData);

  const user = await single.insertInto('users').values({ email: 'prepared@example.com' }).returning('id').executeTakeFirstOrThrow();
  const orders = await Promise.all(
    ['buyer-1@example.com', 'buyer-2@example.com'].map((email, i) =>
      insertOrder(single, { email, amount: 500, currency: 'EUR', providerRef: `ref-prepared-${i}` }),
    ),
  );
  const expiresAt = new Date(Date.now() + 60_000);
  for (const round of [1, 2]) {
    t.equal(await sentEmails.wasSent(`job-${round}`), false, `round ${round}: not sent yet`);
    const recipient = await storeToken({ userId: String(user.id), hash: Buffer.from(`hash-${round}`), expiresAt });
    t.equal(recipient?.email, 'prepared@example.com', `round ${round}: the token is stored for its user`);
    const order = orders[round - 1];
    t.equal((await findOrder(order.id))?.email, order.email, `round ${round}: its own order is read`);
    await sentEmails.record(`job-${round}`, `<email-job-${round}@localhost>`);
    t.equal(await sentEmails.wasSent(`job-${round}`), true, `round ${round}: recorded`);
  }
  // Several jobs at once share one run of the same statement.
  t.same(
    await Promise.all(['job-1', 'job-3', 'job-2'].map((jobId) => sentEmails.wasSent(jobId))),
    [true, false, true],
    'a shared check answers each job',
  );

  const { rows } = await sql<{ name: string; statement: string; runs: string }>`
    select name, statement, (generic_plans + custom_plans)::text as runs from pg_prepared_statements`.execute(single);
  const runsOf = (pattern: RegExp) => rows.filter((row) => pattern.test(row.statement)).map((row) => Number(row.runs));
  t.same(runsOf(/from "sent_emails"/), [5], 'the no-second-send check: prepared once, run five times');
  t.same(runsOf(/insert into sent_emails/), [2], 'the record of the send: prepared once, run twice');
  t.same(runsOf(/insert into email_verification_tokens/), [2], 'the token statement: prepared once, run twice');
  t.same(runsOf(/from "orders"/), [2], 'the order read: prepared once, run twice');
  for (const row of rows) t.match(row.name, /^errand_[0-9a-f]{24}$/);

  const tokens = await single
    .selectFrom('email_verification_tokens')
    .select(['token_hash', 'expires_at'])
    .where('user_id', '=', user.id)
    .orderBy('token_hash')
    .execute();
  t.same(
    tokens.map((row) => [row.token_hash.toString(), row.expires_at.getTime()]),
    [
      ['hash-1', expiresAt.getTime()],
      ['hash-2', expiresAt.getTime()],
    ],
    'each call bound its own values',
  );
});

t.test('the check before a send: prepared once, shared by concurrent jobs, any case', async (t) => {
  const singleData = createDataLayer(errand.config.DATABASE_URL, { poolMax: 1 });
  t.teardown(() => singleData.destroy());
  const findSuppression = createSuppressionCheck(singleData);
  // Stored lower-cased, as the receivers and the admin route store them.
  await sql`insert into suppressions (email, reason, source) values ('bounced@example.com', 'hard-bounce', 'test'), ('spam@example.com', 'complaint', 'test')`.execute(
    singleData.db,
  );
  t.equal(await findSuppression('nobody@example.com'), null, 'one job alone: not suppressed');
  t.same(
    await Promise.all(
      ['bounced@example.com', 'ok@example.com', 'SPAM@example.com', 'BOUNCED@EXAMPLE.COM'].map((email) => findSuppression(email)),
    ),
    ['hard-bounce', null, 'complaint', 'hard-bounce'],
    'four jobs at once: each its own answer, whatever the case',
  );
  const { rows } = await sql<{ runs: string }>`
    select (generic_plans + custom_plans)::text as runs from pg_prepared_statements where statement like '%from "suppressions"%'`.execute(
    singleData.db,
  );
  t.same(
    rows.map((row) => Number(row.runs)),
    [2],
    'one prepared statement, run once for the lone job and once for the four together',
  );

  // errand's own composers need none of it: their statements answer the same question in passing.
  const storeToken = prepareStoreVerificationToken(singleData);
  const findOrder = prepareFindOrders(singleData);
  const users = await singleData.db
    .insertInto('users')
    .values([{ email: 'bounced@example.com' }, { email: 'clean@example.com' }])
    .returning(['id', 'email'])
    .execute();
  const expiresAt = new Date(Date.now() + 60_000);
  const recipients = await Promise.all(
    users.map((user) => storeToken({ userId: String(user.id), hash: Buffer.from(user.email), expiresAt })),
  );
  t.same(
    recipients.map((recipient) => [recipient?.email, recipient?.suppressed]),
    [
      ['bounced@example.com', 'hard-bounce'],
      ['clean@example.com', null],
    ],
    'the token statement returns the address and its suppression',
  );
  const orders = await Promise.all(
    ['spam@example.com', 'clean@example.com'].map((email, i) =>
      insertOrder(singleData.db, { email, amount: 500, currency: 'EUR', providerRef: `ref-suppression-${i}` }),
    ),
  );
  const read = await Promise.all(orders.map((order) => findOrder(order.id)));
  t.same(
    read.map((order) => [order?.email, order?.suppressed]),
    [
      ['spam@example.com', 'complaint'],
      ['clean@example.com', null],
    ],
    "the order read returns the order and its address's suppression",
  );
});

t.test('a migration that changes a returned column while errand runs: the statement is prepared again, not failed', async (t) => {
  const singleData = createDataLayer(errand.config.DATABASE_URL, { poolMax: 1 });
  t.teardown(() => singleData.destroy());
  const sentEmails = createSentEmails(singleData);
  await sentEmails.record('before-migration', '<email-before-migration@localhost>');
  t.equal(await sentEmails.wasSent('before-migration'), true, 'prepared on this connection, returning text');
  // What a deploy's migration may do while the old process still serves: the check now returns varchar.
  await sql`alter table sent_emails alter column job_id type varchar(300)`.execute(errand.deps.db);
  t.equal(await sentEmails.wasSent('before-migration'), true, 'the same check on the same connection still answers');
  t.equal(await sentEmails.wasSent('never-sent'), false);
});
