import t from 'tap';
import { sql, type RawBuilder } from 'kysely';
import { Value } from 'typebox/value';
import { createDataLayer } from '../../src/db/pool.js';
import { outboxJob, outboxJobId, outboxJobIdSql, payloadSql } from '../../src/db/outbox.js';
import { signupUsersStatement } from '../../src/db/signup-user.js';
import { EMAIL_VERIFICATION_JOB, EmailVerificationPayloadSchema, emailQueue } from '../../src/email/jobs.js';
import { freshDatabaseUrl } from '../support/helpers.js';

const data = createDataLayer(freshDatabaseUrl(t), { poolMax: 2 });
t.teardown(() => data.destroy());
const verification = outboxJob(emailQueue, EMAIL_VERIFICATION_JOB);

t.test('a payload built in SQL by the signup statement matches the declared TypeBox schema', async (t) => {
  const [row] = await signupUsersStatement(
    data,
    verification,
  )([{ email: 'typed@example.com', name: null, throttleKey: 'typed@example.com', traceContext: null }]);
  const stored = await data.db
    .selectFrom('outbox')
    .select(['payload', 'queue', 'job_name'])
    .where('id', '=', row!.id)
    .executeTakeFirstOrThrow();
  t.ok(
    Value.Check(EmailVerificationPayloadSchema, stored.payload),
    `stored payload ${JSON.stringify(stored.payload)} is a valid email-verification payload`,
  );
  t.ok(Value.Check(EmailVerificationPayloadSchema, row!.payload), 'and so is the one returned to the publisher');
  t.same([stored.queue, stored.job_name], [emailQueue.name, EMAIL_VERIFICATION_JOB]);
});

t.test('payloadSql takes exactly the fields the schema declares', async (t) => {
  const fields = (value: Record<string, RawBuilder<unknown>>) => value as { userId: RawBuilder<unknown> };
  t.throws(() => payloadSql(verification, fields({})), /fields {2}where the schema declares userId/);
  t.throws(() => payloadSql(verification, fields({ userId: sql`'1'`, extra: sql`'x'` })), /declares userId/);
  const { rows } = await sql<{
    payload: unknown;
  }>`select ${payloadSql(verification, { userId: sql`42::bigint::text` })} as payload`.execute(data.db);
  t.same(rows[0].payload, { userId: '42' });
});

t.test('the job id in SQL is the one the publisher gives BullMQ', async (t) => {
  const { rows } = await sql<{ id: string }>`select ${outboxJobIdSql(sql`${'123'}::bigint`)} as id`.execute(data.db);
  t.equal(rows[0].id, outboxJobId('123'));
});
