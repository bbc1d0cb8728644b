// bench:email-events — what one receiver takes: a SendGrid Event Webhook delivery of 500 events, and an SNS (SES)
// notification, posted over HTTP to one errand (ROLE=api) by a few concurrent clients. Every request is signed
// before the clock starts, so the client's signing does not share the measured CPU.
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { startErrand } from '../src/errand.js';
import { snsStringToSign } from '../src/email/events/ses.js';
import { makePki } from '../test/email-events/support.js';
import {
  errandEnv,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  nullStream,
  onCleanup,
  progress,
  report,
  round,
  runScenario,
  RUN_SECONDS,
} from './lib.js';

const CONCURRENCY = Number(process.env.BENCH_CONNECTIONS ?? 4);
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:bench';

/** Posts the prepared bodies, CONCURRENCY at a time, for at most RUN_SECONDS; every answer must be 200. */
async function drive(
  url: string,
  requests: { body: string; headers: Record<string, string> }[],
): Promise<{ requests: number; seconds: number }> {
  let next = 0;
  const started = performance.now();
  const deadline = started + RUN_SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < requests.length && performance.now() < deadline) {
        const { body, headers } = requests[next++];
        const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
        const text = await res.text();
        if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${text}`);
      }
    }),
  );
  return { requests: next, seconds: (performance.now() - started) / 1000 };
}

await runScenario('email-events', async () => {
  const machine = await machineInfo();
  // The test suite's certificates (own CA, server and SNS signing certificate), removed when the bench ends.
  const certs = makePki({ teardown: (fn) => onCleanup('remove certificates', fn) });
  const certServer = createServer({ key: certs.serverKey, cert: certs.serverCert }, (_req, res) => res.end(certs.signingCert));
  await new Promise<void>((resolve) => certServer.listen(0, '127.0.0.1', resolve));
  onCleanup('close certificate server', () => new Promise((resolve) => certServer.close(resolve)));
  const certUrl = `https://127.0.0.1:${(certServer.address() as { port: number }).port}/cert.pem`;

  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const env = errandEnv({
    ROLE: 'api',
    DATABASE_URL: freshDatabaseUrl(),
    QUEUE_PREFIX: freshQueuePrefix(),
    LOG_LEVEL: 'warn',
    EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
    EMAIL_EVENTS_SES_TOPIC_ARNS: TOPIC,
    EMAIL_EVENTS_SNS_CERT_HOST: '^127\\.0\\.0\\.1$',
  });
  const errand = await startErrand(loadConfig(env), { logDestination: nullStream(), app: { emailEvents: { fetch: { ca: certs.caPem } } } });
  onCleanup('close errand', () => errand.close());
  await errand.app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${(errand.app.server.address() as { port: number }).port}`;

  // SendGrid: 500 events a delivery, as SendGrid batches them: half bounces/deferrals/complaints, half deliveries and opens.
  const KINDS = ['delivered', 'open', 'bounce', 'deferred', 'processed', 'spamreport'];
  progress('signing SendGrid deliveries');
  const sendgrid = Array.from({ length: 400 }, (_, d) => {
    const now = Math.floor(Date.now() / 1000);
    const events = Array.from({ length: 500 }, (_, i) => ({
      email: `user${d}-${i}@bench.example`,
      event: KINDS[i % KINDS.length],
      timestamp: now,
      sg_message_id: `sg-${d}-${i}`,
      sg_event_id: randomBytes(8).toString('hex'),
    }));
    const body = JSON.stringify(events);
    const signature = sign('sha256', Buffer.from(`${now}${body}`), privateKey).toString('base64');
    return {
      body,
      headers: { 'x-twilio-email-event-webhook-signature': signature, 'x-twilio-email-event-webhook-timestamp': String(now) },
    };
  });
  progress('SNS notifications');
  const sns = Array.from({ length: 5000 }, (_, i) => {
    const message: Record<string, string> = {
      Type: 'Notification',
      MessageId: `bench-${i}`,
      TopicArn: TOPIC,
      Timestamp: new Date().toISOString(),
      SignatureVersion: '2',
      SigningCertURL: certUrl,
      Message: JSON.stringify({
        notificationType: 'Bounce',
        bounce: {
          bounceType: i % 2 ? 'Permanent' : 'Transient',
          bouncedRecipients: [{ emailAddress: `sns${i}@bench.example` }],
          timestamp: new Date().toISOString(),
        },
        mail: { messageId: `m${i}`, source: 'no-reply@bench.example' },
      }),
    };
    message.Signature = sign('sha256', Buffer.from(snsStringToSign(message)!), certs.signingKey).toString('base64');
    return { body: JSON.stringify(message), headers: {} };
  });

  progress(`SendGrid: ${CONCURRENCY} clients for up to ${RUN_SECONDS} s`);
  const sg = await drive(`${base}/webhooks/email/sendgrid`, sendgrid);
  progress(`SNS: ${CONCURRENCY} clients for up to ${RUN_SECONDS} s`);
  const ses = await drive(`${base}/webhooks/email/ses`, sns);
  const rows = [
    {
      receiver: 'sendgrid (500 events a delivery)',
      deliveries: sg.requests,
      seconds: round(sg.seconds, 2),
      deliveriesPerS: round(sg.requests / sg.seconds),
      eventsPerS: round((sg.requests * 500) / sg.seconds, 0),
    },
    {
      receiver: 'ses (SNS, 1 bounce a notification)',
      deliveries: ses.requests,
      seconds: round(ses.seconds, 2),
      deliveriesPerS: round(ses.requests / ses.seconds),
      eventsPerS: round(ses.requests / ses.seconds, 0),
    },
  ];
  report('email-events', machine, { concurrency: CONCURRENCY, rows }, rows);
});
