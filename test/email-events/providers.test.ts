import t from 'tap';
import { createHmac, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { findSuppression } from '../../src/db/suppressions.js';
import { signStandardWebhook } from '../../src/core/webhook-signature.js';
import { validate, compileErrors } from '@readme/openapi-parser';
import { testEnv } from '../support/helpers.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';
import { eventCount, startEventsErrand } from './support.js';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const SENDGRID_KEY = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const MAILGUN_KEY = randomBytes(16).toString('hex');
const POSTMARK_AUTH = 'postmark:' + randomBytes(12).toString('hex');
const RESEND_SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const now = () => Math.floor(Date.now() / 1000);

t.test('SendGrid, Mailgun, Postmark and Resend', async (t) => {
  const errand = await startEventsErrand(
    t,
    testEnv(t, {
      ROLE: 'api',
      EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: SENDGRID_KEY,
      EMAIL_EVENTS_MAILGUN_SIGNING_KEY: MAILGUN_KEY,
      EMAIL_EVENTS_POSTMARK_AUTH: POSTMARK_AUTH,
      EMAIL_EVENTS_RESEND_SECRET: RESEND_SECRET,
    }),
  );
  const db = errand.deps.db;
  const post = (provider: string, body: string, headers: Record<string, string> = {}) =>
    errand.app.inject({
      method: 'POST',
      url: `/webhooks/email/${provider}`,
      headers: { 'content-type': 'application/json', ...headers },
      payload: body,
    });

  t.test('the configured receivers are in the OpenAPI document, which stays valid; the counters are exported', async (t) => {
    const doc = (await errand.app.inject('/docs/openapi.json')).json<{
      paths: Record<string, Record<string, { responses: Record<string, unknown>; parameters?: { name: string }[] }>>;
    }>();
    const result = await validate(structuredClone(doc) as never);
    t.ok(result.valid, result.valid ? 'valid' : compileErrors(result));
    for (const provider of ['sendgrid', 'mailgun', 'postmark', 'resend']) {
      const operation = doc.paths[`/webhooks/email/${provider}`]?.post;
      t.ok(operation, provider);
      t.same(Object.keys(operation?.responses ?? {}).sort(), ['200', '400', '401', '413', '500', '503'], `${provider} responses`);
    }
    t.ok(doc.paths['/webhooks/email/sendgrid'].post.parameters?.some((p) => p.name === 'x-twilio-email-event-webhook-signature'));
    t.notOk(doc.paths['/webhooks/email/ses'], 'ses is not configured here');
    const samples = parsePrometheus((await errand.app.inject('/metrics')).body);
    t.equal(sampleValue(samples, 'errand_emails_suppressed_total'), 0, 'errand_emails_suppressed_total is declared');
    t.equal(sampleValue(samples, 'errand_email_events_total', { provider: 'postmark', kind: 'complaint' }), 0, 'every series starts at 0');
  });

  t.test('sendgrid', async (t) => {
    const signed = (events: unknown, timestamp = now(), key = privateKey) => {
      const body = JSON.stringify(events);
      const signature = sign('sha256', Buffer.from(`${timestamp}${body}`), key).toString('base64');
      return [
        body,
        { 'x-twilio-email-event-webhook-signature': signature, 'x-twilio-email-event-webhook-timestamp': String(timestamp) },
      ] as const;
    };
    const ev = (event: string, email: string, extra: Record<string, unknown> = {}) => ({
      email,
      event,
      timestamp: now(),
      sg_message_id: `sg-${email}-${event}`,
      sg_event_id: randomBytes(6).toString('hex'),
      ...extra,
    });
    const [body, headers] = signed([
      ev('processed', 'ok@example.com'),
      ev('delivered', 'ok@example.com'),
      ev('bounce', 'Hard@SG.example.com', { type: 'bounce', reason: '550 5.1.1', status: '5.1.1' }),
      ev('spamreport', 'spam@sg.example.com'),
      ev('deferred', 'soft@sg.example.com', { attempt: '1' }),
      ev('open', 'ok@example.com', { useragent: 'x' }),
    ]);
    const res = await post('sendgrid', body, headers);
    t.equal(res.statusCode, 200, res.body);
    t.same(res.json(), { received: true, events: 3, ignored: 3, suppressed: 2 });
    t.same(await findSuppression(db, 'hard@sg.example.com'), { reason: 'hard-bounce' });
    t.same(await findSuppression(db, 'SPAM@sg.example.com'), { reason: 'complaint' });
    t.equal(await findSuppression(db, 'soft@sg.example.com'), null);
    t.same(
      (await post('sendgrid', body, headers)).json(),
      { received: true, events: 0, ignored: 3, suppressed: 0 },
      'repeated delivery counts once',
    );
    t.equal(await eventCount(errand, 'sendgrid', 'hard_bounce'), 1);
    t.equal(await eventCount(errand, 'sendgrid', 'complaint'), 1);
    t.equal(await eventCount(errand, 'sendgrid', 'soft_bounce'), 1);

    // Two more soft bounces (blocked, deferred) in later deliveries: the third suppresses.
    const [b2, h2] = signed([ev('blocked', 'soft@sg.example.com', { timestamp: now() + 1 })]);
    t.match((await post('sendgrid', b2, h2)).json(), { events: 1, suppressed: 0 });
    const [b3, h3] = signed([ev('bounce', 'SOFT@sg.example.com', { type: 'blocked', timestamp: now() + 2 })]);
    t.match((await post('sendgrid', b3, h3)).json(), { events: 1, suppressed: 1 });
    t.same(await findSuppression(db, 'soft@sg.example.com'), { reason: 'soft-bounces' });

    t.equal(
      (
        await post('sendgrid', body, {
          ...headers,
          'x-twilio-email-event-webhook-timestamp': String(Number(headers['x-twilio-email-event-webhook-timestamp']) - 7),
        })
      ).statusCode,
      401,
      'timestamp is signed',
    );
    const [stale, staleHeaders] = signed([ev('bounce', 'late@example.com')], now() - 301);
    t.equal((await post('sendgrid', stale, staleHeaders)).statusCode, 401, 'stale');
    const [other, otherHeaders] = signed(
      [ev('bounce', 'forged@example.com')],
      now(),
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    );
    t.equal((await post('sendgrid', other, otherHeaders)).statusCode, 401, 'another key');
    t.equal((await post('sendgrid', body)).statusCode, 401, 'no signature');
    t.equal(await findSuppression(db, 'forged@example.com'), null);
    const [notArray, naHeaders] = signed({ event: 'bounce' });
    t.equal((await post('sendgrid', notArray, naHeaders)).statusCode, 400, 'not an array');
    const big = JSON.stringify([{ pad: 'x'.repeat(1024 * 1024) }]);
    t.equal((await post('sendgrid', big, signed([])[1])).statusCode, 413);
  });

  t.test('mailgun', async (t) => {
    const delivery = (
      eventData: Record<string, unknown>,
      timestamp = String(now()),
      token = randomBytes(25).toString('hex'),
      key = MAILGUN_KEY,
    ) =>
      JSON.stringify({
        signature: {
          timestamp,
          token,
          signature: createHmac('sha256', key)
            .update(timestamp + token)
            .digest('hex'),
        },
        'event-data': { timestamp: Number(timestamp), ...eventData },
      });
    const failed = (severity: string, recipient: string) => ({
      id: randomBytes(8).toString('hex'),
      event: 'failed',
      severity,
      recipient,
      reason: 'bounce',
    });
    t.match((await post('mailgun', delivery(failed('permanent', 'Hard@MG.example.com')))).json(), { events: 1, suppressed: 1 });
    t.same(await findSuppression(db, 'hard@mg.example.com'), { reason: 'hard-bounce' });
    t.match((await post('mailgun', delivery({ id: 'c1', event: 'complained', recipient: 'c@mg.example.com' }))).json(), { suppressed: 1 });
    t.same(await findSuppression(db, 'c@mg.example.com'), { reason: 'complaint' });
    t.match((await post('mailgun', delivery(failed('temporary', 's@mg.example.com')))).json(), { events: 1, suppressed: 0 });
    t.match((await post('mailgun', delivery({ id: 'd1', event: 'delivered', recipient: 'x@example.com' }))).json(), {
      events: 0,
      ignored: 1,
    });

    const repeated = { id: 'same-event', event: 'failed', severity: 'temporary', recipient: 's@mg.example.com' };
    t.match((await post('mailgun', delivery(repeated))).json(), { events: 1 });
    t.match((await post('mailgun', delivery(repeated))).json(), { events: 0 }, 'the same event id with a fresh token counts once');
    t.equal(await findSuppression(db, 's@mg.example.com'), null, 'two soft bounces, not three');

    const replay = delivery(failed('permanent', 'replay@mg.example.com'), String(now()), 'the-token');
    t.equal((await post('mailgun', replay)).statusCode, 200);
    const second = await post('mailgun', delivery(failed('permanent', 'replay2@mg.example.com'), String(now()), 'the-token'));
    t.equal(second.statusCode, 401, 'a token seen before is refused');
    t.equal(await findSuppression(db, 'replay2@mg.example.com'), null);
    t.equal((await post('mailgun', delivery(failed('permanent', 'x@example.com'), String(now() - 301)))).statusCode, 401, 'stale');
    t.equal(
      (await post('mailgun', delivery(failed('permanent', 'x@example.com'), String(now()), 't', 'wrong-key'))).statusCode,
      401,
      'bad signature',
    );
    t.equal((await post('mailgun', '{"event-data":{}}')).statusCode, 401, 'no signature');
    t.equal((await post('mailgun', '{')).statusCode, 400);
    t.equal(await findSuppression(db, 'x@example.com'), null);
    t.equal(await eventCount(errand, 'mailgun', 'soft_bounce'), 2);
  });

  t.test('postmark', async (t) => {
    const auth = (credentials = POSTMARK_AUTH) => ({ authorization: `Basic ${Buffer.from(credentials).toString('base64')}` });
    // A 64-bit ID as Postmark sends it: JSON.parse alone would round it.
    const hard = `{"RecordType":"Bounce","ID":4323372036854775807,"Type":"HardBounce","TypeCode":1,"Email":"Hard@PM.example.com","BouncedAt":"${new Date().toISOString()}","Metadata":{"ID":1}}`;
    t.match((await post('postmark', hard, auth())).json(), { events: 1, suppressed: 1 });
    t.match((await post('postmark', hard, auth())).json(), { events: 0 }, 'repeated');
    const neighbour = hard.replace('4323372036854775807', '4323372036854775808').replace('Hard@PM', 'hard2@pm');
    t.match((await post('postmark', neighbour, auth())).json(), { events: 1 }, 'an ID one apart is another event');
    t.same(await findSuppression(db, 'hard@pm.example.com'), { reason: 'hard-bounce' });
    const body = (fields: Record<string, unknown>) =>
      JSON.stringify({ ID: Math.floor(Math.random() * 1e9), BouncedAt: new Date().toISOString(), ...fields });
    t.match(
      (await post('postmark', body({ RecordType: 'SpamComplaint', Type: 'SpamComplaint', Email: 'c@pm.example.com' }), auth())).json(),
      { suppressed: 1 },
    );
    t.same(await findSuppression(db, 'c@pm.example.com'), { reason: 'complaint' });
    for (const type of ['SoftBounce', 'Transient', 'DnsError'])
      t.match(
        (await post('postmark', body({ RecordType: 'Bounce', Type: type, Email: 's@pm.example.com' }), auth())).json(),
        { events: 1 },
        type,
      );
    t.same(await findSuppression(db, 's@pm.example.com'), { reason: 'soft-bounces' });
    t.match((await post('postmark', body({ RecordType: 'Bounce', Type: 'BadEmailAddress', Email: 'bad@pm.example.com' }), auth())).json(), {
      suppressed: 1,
    });
    t.match((await post('postmark', body({ RecordType: 'Delivery', Recipient: 'x@example.com' }), auth())).json(), {
      events: 0,
      ignored: 1,
    });
    t.match((await post('postmark', body({ RecordType: 'Bounce', Type: 'AutoResponder', Email: 'x@example.com' }), auth())).json(), {
      ignored: 1,
    });
    t.equal((await post('postmark', hard, auth('postmark:wrong'))).statusCode, 401);
    t.equal((await post('postmark', hard)).statusCode, 401);
    t.equal((await post('postmark', '[1', auth())).statusCode, 400);
  });

  t.test('resend', async (t) => {
    const svix = (id: string, body: string, timestamp = now()) =>
      Object.fromEntries(
        Object.entries(signStandardWebhook(RESEND_SECRET, id, body, timestamp)).map(([k, v]) => [k.replace('webhook-', 'svix-'), v]),
      );
    const bounced = (to: string[], type = 'Permanent') =>
      JSON.stringify({
        type: 'email.bounced',
        created_at: new Date().toISOString(),
        data: { email_id: 'e1', to, bounce: { type, subType: 'General', message: 'x' } },
      });
    const body = bounced(['Hard@RS.example.com', 'hard2@rs.example.com']);
    t.match((await post('resend', body, svix('msg_1', body))).json(), { events: 2, suppressed: 2 });
    t.match((await post('resend', body, svix('msg_1', body))).json(), { events: 0 }, 'same svix-id again');
    t.same(await findSuppression(db, 'hard@rs.example.com'), { reason: 'hard-bounce' });
    const transient = bounced(['soft@rs.example.com'], 'Transient');
    t.match(
      (await post('resend', transient, signStandardWebhook(RESEND_SECRET, 'msg_2', transient))).json(),
      { events: 1, suppressed: 0 },
      'webhook-* headers alike',
    );
    t.equal(await eventCount(errand, 'resend', 'soft_bounce'), 1);
    const complained = JSON.stringify({ type: 'email.complained', data: { to: ['c@rs.example.com'] } });
    t.match((await post('resend', complained, svix('msg_3', complained))).json(), { suppressed: 1 });
    const delivered = JSON.stringify({ type: 'email.delivered', data: { to: ['x@example.com'] } });
    t.match((await post('resend', delivered, svix('msg_4', delivered))).json(), { ignored: 1 });
    t.equal((await post('resend', body, svix('msg_5', body, now() - 301))).statusCode, 401, 'stale');
    const forged = bounced(['victim@rs.example.com']);
    t.equal((await post('resend', forged, svix('msg_6', body))).statusCode, 401, 'signature of another body');
    t.equal((await post('resend', forged)).statusCode, 401, 'unsigned');
    t.equal(await findSuppression(db, 'victim@rs.example.com'), null);
  });
});
