import t from 'tap';
import { sign } from 'node:crypto';
import { findSuppression } from '../../src/db/suppressions.js';
import { snsStringToSign } from '../../src/email/events/ses.js';
import { testEnv } from '../support/helpers.js';
import { eventCount, makePki, startCertServer, startEventsErrand } from './support.js';

const TOPIC = 'arn:aws:sns:us-east-1:123456789012:ses-events';
const URL_PATH = '/webhooks/email/ses';

t.test('Amazon SES through SNS', async (t) => {
  const pki = makePki(t);
  const certs = await startCertServer(t, pki);
  const errand = await startEventsErrand(
    t,
    testEnv(t, {
      ROLE: 'api',
      EMAIL_EVENTS_SES_TOPIC_ARNS: `arn:aws:sns:eu-west-1:210987654321:other, ${TOPIC}`,
      EMAIL_EVENTS_SNS_CERT_HOST: '^(127\\.0\\.0\\.1|localhost)$',
    }),
    { emailEvents: { fetch: { ca: pki.caPem, timeoutMs: 2000, maxBytes: 64 * 1024 } } },
  );
  let n = 0;

  /** An SNS message signed as SNS signs it (version 1: SHA1, 2: SHA256) with the test's signing certificate. */
  function snsMessage(fields: Record<string, string>, version: '1' | '2' = '2', key = pki.signingKey): Record<string, string> {
    const message: Record<string, string> = {
      Type: 'Notification',
      MessageId: `msg-${(n += 1)}`,
      TopicArn: TOPIC,
      Timestamp: new Date().toISOString(),
      SignatureVersion: version,
      SigningCertURL: `${certs.origin}/cert.pem`,
      ...fields,
    };
    const text = snsStringToSign(message)!;
    message.Signature = sign(version === '1' ? 'sha1' : 'sha256', Buffer.from(text), key).toString('base64');
    return message;
  }
  const notification = (ses: unknown, version: '1' | '2' = '2', extra: Record<string, string> = {}) =>
    snsMessage({ Message: JSON.stringify(ses), ...extra }, version);
  const bounce = (bounceType: string, ...emails: string[]) => ({
    notificationType: 'Bounce',
    bounce: {
      bounceType,
      bounceSubType: 'General',
      bouncedRecipients: emails.map((emailAddress) => ({ emailAddress, status: '5.1.1' })),
      timestamp: new Date().toISOString(),
    },
    mail: { messageId: 'ses-1', source: 'no-reply@errand.test', destination: emails },
  });
  const post = (body: unknown) =>
    errand.app.inject({
      method: 'POST',
      url: URL_PATH,
      headers: { 'content-type': 'text/plain; charset=UTF-8', 'x-amz-sns-message-type': 'Notification' },
      payload: typeof body === 'string' ? body : JSON.stringify(body),
    });

  t.test(
    'signature versions 1 and 2: a permanent bounce suppresses every bounced recipient; the certificate is fetched once',
    async (t) => {
      const res = await post(notification(bounce('Permanent', 'One@Example.com', 'two@example.com'), '1'));
      t.equal(res.statusCode, 200, res.body);
      t.match(res.json(), { received: true, events: 2, suppressed: 2 });
      t.same(await findSuppression(errand.deps.db, 'one@example.com'), { reason: 'hard-bounce' });
      t.same(await findSuppression(errand.deps.db, 'TWO@example.com'), { reason: 'hard-bounce' });
      const complaint = {
        notificationType: 'Complaint',
        complaint: { complainedRecipients: [{ emailAddress: 'c@example.com' }], timestamp: new Date().toISOString() },
      };
      t.equal(
        (await post(notification(complaint, '2', { Subject: 'Amazon SES Email Event Notification' }))).statusCode,
        200,
        'with a Subject',
      );
      t.same(await findSuppression(errand.deps.db, 'c@example.com'), { reason: 'complaint' });
      t.equal(certs.requests.filter((p) => p === '/cert.pem').length, 1, 'cached');
      t.equal(await eventCount(errand, 'ses', 'hard_bounce'), 2);
      t.equal(await eventCount(errand, 'ses', 'complaint'), 1);
    },
  );

  t.test('repeated delivery counts once; transient bounces are soft; other notifications are ignored', async (t) => {
    const message = notification(bounce('Transient', 'soft@example.com'));
    t.match((await post(message)).json(), { events: 1, suppressed: 0 });
    t.match((await post(message)).json(), { received: true, events: 0 }, 'same MessageId again');
    t.equal(await eventCount(errand, 'ses', 'soft_bounce'), 1);
    t.match((await post(notification(bounce('Undetermined', 'soft@example.com')))).json(), { events: 1 });
    t.match((await post(notification(bounce('Transient', 'SOFT@example.com')))).json(), { events: 1, suppressed: 1 }, 'third soft bounce');
    t.same(await findSuppression(errand.deps.db, 'soft@example.com'), { reason: 'soft-bounces' });
    const delivery = await post(notification({ notificationType: 'Delivery', delivery: { recipients: ['x@example.com'] } }));
    t.match(delivery.json(), { received: true, events: 0, ignored: 1 });
    t.equal(await eventCount(errand, 'ses', 'ignored'), 1);
  });

  t.test('refusals', async (t) => {
    const fetchesBefore = certs.requests.length;
    const forged = notification(bounce('Permanent', 'victim@example.com'));
    forged.Message = JSON.stringify(bounce('Permanent', 'other-victim@example.com'));
    t.equal((await post(forged)).statusCode, 401, 'message changed after signing');
    const otherKey = makePki(t).signingKey;
    t.equal((await post(snsMessage({ Message: '{}' }, '2', otherKey))).statusCode, 401, 'signed by another key');
    t.equal(
      (await post(notification(bounce('Permanent', 'x@example.com'), '2', { TopicArn: 'arn:aws:sns:us-east-1:1:unknown' }))).statusCode,
      401,
      'unknown topic',
    );
    const stale = snsMessage({ Message: '{}', Timestamp: new Date(Date.now() - 301_000).toISOString() });
    t.equal((await post(stale)).statusCode, 401, 'stale timestamp');
    t.equal((await post('not json')).statusCode, 400);
    t.equal((await post({ Type: 'Notification' })).statusCode, 401, 'no topic');
    t.equal(certs.requests.length, fetchesBefore, 'none of these fetched anything');

    for (const url of [
      'https://sns.evil.example.com/cert.pem',
      `${certs.origin.replace('https', 'http')}/cert.pem`,
      'https://127.0.0.1.evil.example/cert.pem',
      'file:///etc/passwd',
    ]) {
      const res = await post(snsMessage({ Message: '{}', SigningCertURL: url }));
      t.equal(res.statusCode, 401, `untrusted certificate URL ${url}`);
    }
    const huge = snsMessage({ Message: '{}', SigningCertURL: `${certs.origin}/huge.pem` });
    t.equal((await post(huge)).statusCode, 502, 'a certificate over the size limit is not read');
    t.equal(certs.requests.length, fetchesBefore + 1, 'only the trusted host was asked (once, for the huge one)');
    t.equal(await findSuppression(errand.deps.db, 'victim@example.com'), null);
    t.equal(await findSuppression(errand.deps.db, 'other-victim@example.com'), null);
  });

  t.test('SubscriptionConfirmation: confirmed by fetching SubscribeURL, from a trusted host only', async (t) => {
    const confirmation = (subscribeUrl: string) =>
      snsMessage({ Type: 'SubscriptionConfirmation', Message: 'You have chosen to subscribe…', Token: 'tok', SubscribeURL: subscribeUrl });
    const res = await post(confirmation(`${certs.origin}/confirm?Action=ConfirmSubscription&Token=tok`));
    t.equal(res.statusCode, 200, res.body);
    t.ok(certs.requests.includes('/confirm?Action=ConfirmSubscription&Token=tok'), 'SubscribeURL fetched');
    const before = certs.requests.length;
    t.equal((await post(confirmation('https://attacker.example.com/confirm'))).statusCode, 401);
    t.equal(certs.requests.length, before, 'no fetch');
    const forged = confirmation(`${certs.origin}/confirm?x=1`);
    forged.SubscribeURL = `${certs.origin}/confirm?x=2`;
    t.equal((await post(forged)).statusCode, 401, 'SubscribeURL is signed');
    t.notOk(certs.requests.includes('/confirm?x=2'));
    const unsubscribe = snsMessage({
      Type: 'UnsubscribeConfirmation',
      Message: 'bye',
      Token: 'tok',
      SubscribeURL: `${certs.origin}/confirm?again`,
    });
    t.equal((await post(unsubscribe)).statusCode, 200);
    t.notOk(certs.requests.includes('/confirm?again'), 'an unsubscribe confirmation fetches nothing');
  });

  t.test('a provider not configured answers 404', async (t) => {
    for (const provider of ['sendgrid', 'mailgun', 'postmark', 'resend', 'nope']) {
      t.equal((await errand.app.inject({ method: 'POST', url: `/webhooks/email/${provider}`, payload: '{}' })).statusCode, 404, provider);
    }
  });

  t.test('over 1 MiB: 413', async (t) => {
    const res = await post(JSON.stringify({ Message: 'x'.repeat(1024 * 1024) }));
    t.equal(res.statusCode, 413);
  });

  t.test('no full address in the logs', async (t) => {
    t.notOk(
      errand.logs.raw.some((line) => line.includes('one@example.com')),
      'addresses masked',
    );
  });
});
