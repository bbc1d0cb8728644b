import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';
import { deriveTrackingKey, trackingToken } from '../../src/payments/tracking.js';
import { extractLink, freshDatabaseUrl, REDIS_URL, spawnErrand, startSmtpServer, startTestErrand, testEnv } from '../support/helpers.js';
import { createOrder, LINK_SECRET, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';

t.test('the emailed tracking link verifies under LINK_SECRET and not under the webhook secret', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, LINK_SECRET }));
  const { app } = errand;
  const order = await createOrder(app, { email: 'link@example.com' });
  t.equal((await sendWebhook(app, paymentEvent(order))).statusCode, 200);
  const [email] = await smtp.waitForEmails(1);
  const link = new URL(extractLink(email.text, `/orders/${order.id}/tracking?token=`));
  const token = link.searchParams.get('token');
  t.equal(token, trackingToken(deriveTrackingKey(LINK_SECRET), order.id), 'token keyed by LINK_SECRET');
  t.not(token, trackingToken(deriveTrackingKey(WEBHOOK_SECRET), order.id), 'not by the webhook secret');
  t.equal((await app.inject({ method: 'GET', url: `${link.pathname}${link.search}` })).statusCode, 200, 'the link works');
  const webhookKeyed = trackingToken(deriveTrackingKey(WEBHOOK_SECRET), order.id);
  t.equal(
    (await app.inject({ method: 'GET', url: `/orders/${order.id}/tracking?token=${webhookKeyed}` })).statusCode,
    404,
    'a webhook-secret token fails',
  );
});

t.test('LINK_SECRET: a development default outside production, required in production', async (t) => {
  t.type(loadConfig({}).LINK_SECRET, 'string', 'default outside production');
  t.equal(loadConfig({ LINK_SECRET: LINK_SECRET }).LINK_SECRET, LINK_SECRET);
  const production = {
    NODE_ENV: 'production',
    PAYMENT_WEBHOOK_SECRET: 'w'.repeat(40),
    PUBLIC_BASE_URL: 'https://errand.example',
    SMTP_URL: 'smtp://127.0.0.1:2525',
  };
  t.throws(() => loadConfig(production), ConfigError);
  t.throws(() => loadConfig(production), /LINK_SECRET/);
  t.equal(loadConfig({ ...production, LINK_SECRET: 'l'.repeat(40) }).LINK_SECRET, 'l'.repeat(40));
});

t.test('production without LINK_SECRET refuses to start: exit 1, one line naming it', async (t) => {
  const child = await spawnErrand(
    t,
    {
      NODE_ENV: 'production',
      PAYMENT_WEBHOOK_SECRET: 'production-webhook-secret-0123456789abcdef',
      PUBLIC_BASE_URL: 'https://errand.example',
      SMTP_URL: 'smtp://127.0.0.1:2525',
      DATABASE_URL: freshDatabaseUrl(t),
      REDIS_URL,
    },
    { waitReady: false },
  );
  const exit = await child.exited;
  t.equal(exit.code, 1, 'exit 1');
  t.equal(child.stderr.length, 1, 'one line');
  t.match(child.stderr[0], /LINK_SECRET/);
  t.notOk(
    child.stdout.some((line) => line.includes('Server listening')),
    'never listened',
  );
});
