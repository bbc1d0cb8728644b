import t from 'tap';
import { sql } from 'kysely';
import { createDb } from '../../src/core/db.js';
import { createSentEmails } from '../../src/email/sent-emails.js';
import { insertOrder, prepareFindOrders } from '../../src/payments/repository.js';
import { prepareStoreVerificationToken } from '../../src/signup/repository.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

// The statements an email job runs besides its send (ROLE=api: no worker runs jobs beside the test).
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));

t.test('the email worker statements are named prepared statements: parsed and planned once per connection', async (t) => {
  // One connection, so the session that ran the statements is the one asked about its prepared statements.
  const single = createDb(errand.config.DATABASE_URL, 1);
  t.teardown(() => single.destroy());
  const sentEmails = createSentEmails(single);
  const storeToken = prepareStoreVerificationToken(single);
  const findOrder = prepareFindOrders(single);

  const user = await single.insertInto('users').values({ email: 'prepared@example.com' }).returning('id').executeTakeFirstOrThrow();
  const order = await insertOrder(single, { email: 'buyer@example.com', amount: 500, currency: 'EUR', providerRef: 'ref-prepared' });
  const expiresAt = new Date(Date.now() + 60_000);
  for (const round of [1, 2]) {
    t.equal(await sentEmails.wasSent(`job-${round}`), false, `round ${round}: not sent yet`);
    const recipient = await storeToken({ userId: String(user.id), hash: Buffer.from(`hash-${round}`), expiresAt });
    t.equal(recipient?.email, 'prepared@example.com', `round ${round}: the token is stored for its user`);
    t.equal((await findOrder(order.id))?.email, 'buyer@example.com', `round ${round}: the order is read`);
    await sentEmails.record(`job-${round}`);
    t.equal(await sentEmails.wasSent(`job-${round}`), true, `round ${round}: recorded`);
  }

  const { rows } = await sql<{ name: string; statement: string }>`select name, statement from pg_prepared_statements`.execute(single);
  const preparedFor = (pattern: RegExp) => rows.filter((row) => pattern.test(row.statement));
  t.equal(preparedFor(/from "sent_emails"/).length, 1, 'the no-second-send check, prepared once');
  t.equal(preparedFor(/insert into sent_emails/).length, 1, 'the record of the send, prepared once');
  t.equal(preparedFor(/insert into email_verification_tokens/).length, 1, 'the token statement, prepared once');
  t.equal(preparedFor(/from "orders"/).length, 1, 'the order read, prepared once');
  for (const row of rows) t.match(row.name, /^errand_[0-9a-f]{24}$/);

  const tokens = await single.selectFrom('email_verification_tokens').select('token_hash').where('user_id', '=', user.id).execute();
  t.same(tokens.map((row) => row.token_hash.toString()).sort(), ['hash-1', 'hash-2'], 'each call bound its own values');
});
