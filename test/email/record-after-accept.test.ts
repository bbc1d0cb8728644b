import t from 'tap';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { startTestErrand, testEnv, waitFor, type T } from '../support/helpers.js';
import { createOrder, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';

interface Delivery {
  messageId: string | undefined;
  accepted: boolean;
}

/** A real SMTP server whose verdict on each delivery (after the whole message arrived) the test decides. */
async function startSmtp(t: T, onMessage: (n: number) => Promise<{ code: number; message: string } | undefined>) {
  const deliveries: Delivery[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    closeTimeout: 1000,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on(
        'end',
        () =>
          void (async () => {
            const parsed = await simpleParser(Buffer.concat(chunks));
            const delivery: Delivery = { messageId: parsed.messageId, accepted: false };
            deliveries.push(delivery);
            const refusal = await onMessage(deliveries.length);
            if (refusal) return callback(Object.assign(new Error(refusal.message), { responseCode: refusal.code }));
            delivery.accepted = true;
            callback();
          })(),
      );
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.server.unref();
  server.on('error', () => {});
  const { port } = server.server.address() as { port: number };
  return { url: `smtp://127.0.0.1:${port}`, deliveries };
}

async function adminClient(t: T, databaseUrl: string) {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  url.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  t.teardown(async () => {
    await admin.query(`alter database ${admin.escapeIdentifier(name)} allow_connections true`).catch(() => {});
    await admin.end();
  });
  return { admin, name };
}

t.test('PostgreSQL away right after SMTP accepted the message: one delivery, and the send is recorded once it is back', async (t) => {
  let blockDatabase: () => Promise<void> = async () => {};
  const smtp = await startSmtp(t, async (n) => {
    if (n === 1) await blockDatabase();
    return undefined;
  });
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
  const { admin, name } = await adminClient(t, errand.config.DATABASE_URL);
  const db = admin.escapeIdentifier(name);
  let unblocked!: Promise<void>;
  blockDatabase = async () => {
    // Every connection of errand's database dropped, and no new one accepted for 1.5 s: the record of this send
    // (written right after the acceptance below) fails, as on a PostgreSQL restart.
    await admin.query(`alter database ${db} allow_connections false`);
    await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
    unblocked = new Promise((resolve) => setTimeout(resolve, 1500)).then(async () => {
      await admin.query(`alter database ${db} allow_connections true`);
    });
  };

  const order = await createOrder(errand.app, { email: 'once@example.com' });
  t.equal((await sendWebhook(errand.app, paymentEvent(order))).statusCode, 200);
  await waitFor(() => (smtp.deliveries.length > 0 ? true : undefined), 15000, 'the first delivery');
  await unblocked;
  const recorded = await waitFor(
    async () => {
      const found = await errand.deps.db
        .selectFrom('sent_emails')
        .select(['job_id', 'message_id'])
        .execute()
        .catch(() => []);
      return found.length > 0 ? found : undefined;
    },
    20000,
    'the send to be recorded',
  );
  await waitFor(async () => ((await errand.deps.queues.email.getCompletedCount()) === 1 ? true : undefined), 15000, 'the job completed');
  // Room for a wrong second attempt to show up (the job backoff is 50 ms in tests).
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.equal(smtp.deliveries.length, 1, 'exactly one delivery');
  t.equal(recorded.length, 1);
  t.match(recorded[0].job_id, /^outbox-\d+$/);
  t.equal(recorded[0].message_id, smtp.deliveries[0].messageId, 'the record carries the delivered Message-ID');
});

t.test('every delivery of one job carries the same Message-ID, derived from the job id', async (t) => {
  // The first delivery is deferred (a per-message 4xx): the job is retried and delivers again.
  const smtp = await startSmtp(t, async (n) => (n === 1 ? { code: 451, message: 'try again later' } : undefined));
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
  const order = await createOrder(errand.app, { email: 'retried@example.com' });
  t.equal((await sendWebhook(errand.app, paymentEvent(order))).statusCode, 200);
  await waitFor(() => (smtp.deliveries.some((d) => d.accepted) ? true : undefined), 15000, 'the accepted delivery');
  t.equal(smtp.deliveries.length, 2);
  const [first, second] = smtp.deliveries;
  t.match(first.messageId, /^<email-outbox-\d+@localhost>$/);
  t.equal(second.messageId, first.messageId, 'the retry carries the first attempt’s Message-ID');
  // SMTP accepts before the worker records the send: wait for the record, not just the delivery.
  const row = await waitFor(
    () => errand.deps.db.selectFrom('sent_emails').select(['job_id', 'message_id']).executeTakeFirst(),
    15000,
    'the send record',
  );
  t.equal(row.message_id, first.messageId);
  t.equal(first.messageId, `<email-${row.job_id}@localhost>`);
});

t.test('Message-IDs: the domain of MAIL_FROM (else PUBLIC_BASE_URL), odd job ids encoded, long ones hashed', async (t) => {
  const { emailMessageId, messageIdDomain } = await import('../../src/email/mailer.js');
  t.equal(messageIdDomain('errand <no-reply@Mail.Example.com>', 'https://x.test'), 'mail.example.com');
  t.equal(messageIdDomain('no-reply@example.org', 'https://x.test'), 'example.org');
  t.equal(messageIdDomain('errand', 'https://shop.example.net/errand'), 'shop.example.net');
  t.equal(emailMessageId('outbox-42', 'example.com'), '<email-outbox-42@example.com>');
  t.equal(emailMessageId('a b>c', 'example.com'), '<email-a=20b=3ec@example.com>');
  t.match(emailMessageId('x'.repeat(300), 'example.com'), /^<email-sha256-[0-9a-f]{64}@example\.com>$/);
  t.equal(emailMessageId('outbox-42', 'example.com'), emailMessageId('outbox-42', 'example.com'), 'deterministic');
});
