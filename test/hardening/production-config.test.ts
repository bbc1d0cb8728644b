import t from 'tap';
import { ConfigError, DEV_LINK_SECRET, DEV_WEBHOOK_SECRET, loadConfig } from '../../src/config.js';
import { PAYMENTS_RECONCILE_QUEUE, PAYMENTS_SWEEP_JOB } from '../../src/reconcile/jobs.js';
import {
  REDIS_URL,
  freshDatabaseUrl,
  freshQueuePrefix,
  spawnErrand,
  startSmtpServer,
  startTestErrand,
  testEnv,
  waitFor,
} from '../support/helpers.js';

const COMPLETE = {
  NODE_ENV: 'production',
  PAYMENT_WEBHOOK_SECRET: 'w'.repeat(40),
  LINK_SECRET: 'l'.repeat(40),
  ADMIN_TOKEN: 'a'.repeat(40),
  PUBLIC_BASE_URL: 'https://errand.example.com',
  SMTP_URL: 'smtp://127.0.0.1:2525',
};

t.test('each production refusal stops loadConfig with one line naming its variable', async (t) => {
  const cases: [Record<string, string | undefined>, string][] = [
    [{ PAYMENT_WEBHOOK_SECRET: undefined }, 'PAYMENT_WEBHOOK_SECRET'],
    [{ PAYMENT_WEBHOOK_SECRET: 'short' }, 'PAYMENT_WEBHOOK_SECRET'],
    [{ PAYMENT_WEBHOOK_SECRET: DEV_WEBHOOK_SECRET }, 'PAYMENT_WEBHOOK_SECRET'],
    [{ PAYMENT_WEBHOOK_SECRET: `${'w'.repeat(40)} short` }, 'PAYMENT_WEBHOOK_SECRET'],
    [{ LINK_SECRET: undefined }, 'LINK_SECRET'],
    [{ LINK_SECRET: 'x'.repeat(31) }, 'LINK_SECRET'],
    [{ LINK_SECRET: DEV_LINK_SECRET }, 'LINK_SECRET'],
    [{ ADMIN_TOKEN: 'admin' }, 'ADMIN_TOKEN'],
    [{ PUBLIC_BASE_URL: undefined }, 'PUBLIC_BASE_URL'],
    [{ PUBLIC_BASE_URL: 'http://errand.example.com' }, 'PUBLIC_BASE_URL'],
    [{ SMTP_URL: undefined }, 'SMTP_URL'],
    [{ SMTP_URL: '' }, 'SMTP_URL'],
    // Blanks only are a missing value: nothing to check, and no falling back to the published dev secret.
    [{ PAYMENT_WEBHOOK_SECRET: ' ' }, 'PAYMENT_WEBHOOK_SECRET is required'],
    [{ PAYMENT_WEBHOOK_SECRET: ' \t\n ' }, 'PAYMENT_WEBHOOK_SECRET is required'],
    [{ LINK_SECRET: ' ' }, 'LINK_SECRET is required'],
    [{ SMTP_URL: '  ' }, 'SMTP_URL'],
    [{ PUBLIC_BASE_URL: ' ' }, 'PUBLIC_BASE_URL'],
    [{ TRUST_PROXY: 'true' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: ' TRUE ' }, 'TRUST_PROXY'],
    [{ EMAIL_EVENTS_MAILGUN_SIGNING_KEY: 'key-0123456789' }, 'EMAIL_EVENTS_MAILGUN_SIGNING_KEY'],
    [{ EMAIL_EVENTS_POSTMARK_AUTH: 'postmark:short-password' }, 'EMAIL_EVENTS_POSTMARK_AUTH'],
    [{ EMAIL_EVENTS_POSTMARK_AUTH: `postmark:${'compose-admin-token-change-me'}` }, 'EMAIL_EVENTS_POSTMARK_AUTH'],
    [{ EMAIL_EVENTS_RESEND_SECRET: `whsec_${Buffer.alloc(16, 7).toString('base64')}` }, 'EMAIL_EVENTS_RESEND_SECRET'],
    [{ EMAIL_EVENTS_RESEND_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }, 'EMAIL_EVENTS_RESEND_SECRET'],
  ];
  for (const [change, name] of cases) {
    const env = { ...COMPLETE, ...change };
    try {
      loadConfig(env);
      t.fail(`${JSON.stringify(change)} was accepted`);
    } catch (error) {
      t.type(error, ConfigError);
      const message = (error as Error).message;
      t.match(message, name, `${JSON.stringify(change).slice(0, 60)} → ${message}`);
      t.notOk(message.includes('\n'), 'one line');
      // The refusal names the variable, never its value.
      const value = Object.values(change)[0]?.trim();
      if (value && value.length > 4) t.notOk(message.includes(value), 'value not echoed');
    }
  }
  const config = loadConfig(COMPLETE);
  t.equal(config.LINK_SECRET, 'l'.repeat(40), 'a complete production config loads');
  t.equal(loadConfig({ ...COMPLETE, ADMIN_TOKEN: undefined }).ADMIN_TOKEN, undefined, 'ADMIN_TOKEN may stay unset');
  t.equal(loadConfig({}).PAYMENT_WEBHOOK_SECRET, DEV_WEBHOOK_SECRET, 'outside production the dev defaults apply');
  t.equal(loadConfig({ ...COMPLETE, TRUST_PROXY: '1' }).TRUST_PROXY, '1', 'a hop count is fine in production');
});

t.test('production: the email-event secrets are optional; a blank one is unset, a strong one loads', async (t) => {
  const blank = loadConfig({
    ...COMPLETE,
    EMAIL_EVENTS_MAILGUN_SIGNING_KEY: ' ',
    EMAIL_EVENTS_POSTMARK_AUTH: '  ',
    EMAIL_EVENTS_RESEND_SECRET: '\t',
    EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: ' ',
    EMAIL_EVENTS_SES_TOPIC_ARNS: ' ',
  });
  t.match(blank, {
    EMAIL_EVENTS_MAILGUN_SIGNING_KEY: undefined,
    EMAIL_EVENTS_POSTMARK_AUTH: undefined,
    EMAIL_EVENTS_RESEND_SECRET: undefined,
    EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: undefined,
  });
  t.same(blank.EMAIL_EVENTS_SES_TOPIC_ARNS, []);
  const strong = {
    EMAIL_EVENTS_MAILGUN_SIGNING_KEY: '0123456789abcdef0123456789abcdef',
    EMAIL_EVENTS_POSTMARK_AUTH: 'postmark:0123456789abcdefXYZ',
    EMAIL_EVENTS_RESEND_SECRET: `whsec_${Buffer.alloc(24, 9).toString('base64')}`,
  };
  t.match(loadConfig({ ...COMPLETE, ...strong }), strong);
});

t.test('TRUST_PROXY forms', async (t) => {
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, 'true');
  t.ok(loadConfig({ TRUST_PROXY: '2' }));
  t.ok(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 192.168.1.1, ::1/128' }));
  t.throws(() => loadConfig({ TRUST_PROXY: 'maybe' }), /TRUST_PROXY/);
  t.throws(() => loadConfig({ TRUST_PROXY: '10.0.0.0/33' }), /TRUST_PROXY/);
});

t.test('a refused production start exits 1 with one line naming the variable', async (t) => {
  const child = await spawnErrand(
    t,
    { ...COMPLETE, PAYMENT_WEBHOOK_SECRET: 'too-short', DATABASE_URL: freshDatabaseUrl(t), REDIS_URL, QUEUE_PREFIX: freshQueuePrefix(t) },
    { waitReady: false },
  );
  const exit = await child.exited;
  t.equal(exit.code, 1);
  t.equal(child.stderr.length, 1, `one line: ${child.stderr.join(' | ')}`);
  t.match(child.stderr[0], /PAYMENT_WEBHOOK_SECRET/);
});

t.test('a URL that does not parse: exit 1, one line naming it, the password nowhere in the output', async (t) => {
  for (const [name, value, password] of [
    ['DATABASE_URL', 'postgres://u:s3cretpw@[bad', 's3cretpw'],
    ['SMTP_URL', 'smtp://mailer:hunter2/pw@mail.example.com:587', 'hunter2'],
  ] as const) {
    const child = await spawnErrand(
      t,
      { ...COMPLETE, DATABASE_URL: freshDatabaseUrl(t), REDIS_URL, QUEUE_PREFIX: freshQueuePrefix(t), [name]: value },
      { waitReady: false },
    );
    const exit = await child.exited;
    t.equal(exit.code, 1, `${name}: exit 1`);
    t.equal(child.stderr.length, 1, `${name}: one line: ${child.stderr.join(' | ')}`);
    t.match(child.stderr[0], name);
    const output = [...child.stdout, ...child.stderr].join('\n');
    t.notOk(output.includes(password), `${name}: the password is not printed`);
    t.notOk(output.includes(value), `${name}: nor the URL`);
  }
});

t.test('a complete production config starts; a sweep without PAYMENT_PROVIDER_URL logs an error and counts it', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { ...COMPLETE, SMTP_URL: smtp.url }));
  t.notOk(
    errand.logs.lines().some((line) => /development defaults/.test(String(line.msg))),
    'no development-default warning in production',
  );
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);

  const job = await errand.deps.queues[PAYMENTS_RECONCILE_QUEUE].add(
    PAYMENTS_SWEEP_JOB,
    { windowHours: 1, limit: 10 },
    { jobId: 'sweep-prod-test' },
  );
  await waitFor(async () => ((await job.getState()) === 'completed' ? true : undefined), 15000, 'sweep completed');
  const error = errand.logs.lines().find((line) => line.level === 50 && /PAYMENT_PROVIDER_URL/.test(String(line.msg)));
  t.ok(error, 'error line naming PAYMENT_PROVIDER_URL');
  const metrics = await errand.app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /errand_payments_sweeps_without_provider_total 1/);
});

t.test('outside production, one warning at start names the development defaults in use', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const warnings = errand.logs.lines().filter((line) => /development defaults/.test(String(line.msg)));
  t.equal(warnings.length, 1);
  t.same(warnings[0].variables, ['PAYMENT_WEBHOOK_SECRET', 'LINK_SECRET']);
});
