import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { ConfigError, DEFAULT_SNS_CERT_HOST, DEV_LINK_SECRET, DEV_WEBHOOK_SECRET, loadConfig } from '../../src/config.js';

type Tap = Pick<typeof t, 'type' | 'notOk' | 'fail'>;

/** loadConfig's one-line error for `env` (fails the test when it loads). */
function configError(t: Tap, env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    t.type(error, ConfigError);
    const message = (error as Error).message;
    t.notOk(message.includes('\n'), 'one line');
    return message;
  }
  t.fail(`${JSON.stringify(env)} was accepted`);
  return '';
}

t.test('defaults are the contract defaults', async (t) => {
  const config = loadConfig({});
  t.match(config, {
    PORT: 3000,
    HOST: '127.0.0.1',
    ROLE: 'all',
    DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/errand',
    REDIS_URL: 'redis://127.0.0.1:6379',
    QUEUE_PREFIX: 'errand',
    LOG_LEVEL: 'info',
    PUBLIC_BASE_URL: 'http://localhost:3000',
    MAIL_FROM: 'errand <no-reply@localhost>',
    MAIL_DIR: 'var/mail',
    EMAIL_CONCURRENCY: 1,
    EMAIL_RATE_MAX: 1,
    EMAIL_RATE_DURATION_MS: 150,
    JOB_ATTEMPTS: 3,
    JOB_BACKOFF_MS: 60000,
    PAYMENTS_RECONCILE_ENABLED: false,
    PAYMENTS_RECONCILE_CRON: '0 * * * *',
    PAYMENTS_RECONCILE_WINDOW_HOURS: 24,
    PAYMENTS_RECONCILE_LIMIT: 200,
  });
  t.equal(config.SMTP_URL, undefined);
  t.equal(config.ADMIN_TOKEN, undefined);
  t.equal(config.PAYMENT_PROVIDER_URL, undefined);
  t.ok(Object.isFrozen(config));
});

t.test('values are typed, not strings', async (t) => {
  const config = loadConfig({ PORT: '8080', PAYMENTS_RECONCILE_ENABLED: 'true', ROLE: 'worker' });
  t.equal(config.PORT, 8080);
  t.equal(config.PAYMENTS_RECONCILE_ENABLED, true);
  t.equal(config.ROLE, 'worker');
});

t.test('a bad value stops with one line naming the variable', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ EMAIL_CONCURRENCY: 'many' }, /EMAIL_CONCURRENCY/],
    [{ EMAIL_CONCURRENCY: '0' }, /EMAIL_CONCURRENCY/],
    [{ PORT: '70000' }, /PORT/],
    [{ ROLE: 'boss' }, /ROLE/],
    [{ REDIS_URL: 'localhost:6379' }, /REDIS_URL/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ PAYMENTS_RECONCILE_ENABLED: 'maybe' }, /PAYMENTS_RECONCILE_ENABLED/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ NODE_ENV: 'production' }, /PAYMENT_WEBHOOK_SECRET/],
  ];
  for (const [env, name] of cases) {
    t.throws(() => loadConfig(env), ConfigError, JSON.stringify(env));
    try {
      loadConfig(env);
    } catch (error) {
      const message = (error as Error).message;
      t.match(message, name, `${JSON.stringify(env)} → ${message}`);
      t.notOk(message.includes('\n'), 'one line');
    }
  }
});

t.test('production with its secrets starts; empty strings count as unset', async (t) => {
  const production = {
    NODE_ENV: 'production',
    PAYMENT_WEBHOOK_SECRET: 's'.repeat(32),
    LINK_SECRET: 'l'.repeat(32),
    PUBLIC_BASE_URL: 'https://errand.example.com',
    SMTP_URL: 'smtp://mail:25',
  };
  const config = loadConfig({ ...production, ADMIN_TOKEN: '' });
  t.equal(config.PAYMENT_WEBHOOK_SECRET, 's'.repeat(32));
  t.equal(config.ADMIN_TOKEN, undefined);
  // An empty SMTP_URL is unset, which production refuses (test/hardening/production-config.test.ts has every refusal).
  t.throws(() => loadConfig({ ...production, SMTP_URL: '' }), /SMTP_URL/);
});

t.test('a bad cron pattern or time zone stops start-up, naming the variable', async (t) => {
  t.throws(() => loadConfig({ PAYMENTS_RECONCILE_CRON: 'every hour' }), /PAYMENTS_RECONCILE_CRON/);
  t.throws(() => loadConfig({ PAYMENTS_RECONCILE_CRON: '61 * * * *' }), /PAYMENTS_RECONCILE_CRON/);
  t.throws(() => loadConfig({ PAYMENTS_RECONCILE_TZ: 'Mars/Olympus' }), /PAYMENTS_RECONCILE_TZ/);
  t.equal(
    loadConfig({ PAYMENTS_RECONCILE_CRON: '*/5 * * * * *', PAYMENTS_RECONCILE_TZ: 'Europe/Paris' }).PAYMENTS_RECONCILE_CRON,
    '*/5 * * * * *',
  );
});

t.test('outside production, short admin tokens and webhook secrets are accepted (production refuses them)', async (t) => {
  const config = loadConfig({ ADMIN_TOKEN: 'admin', PAYMENT_WEBHOOK_SECRET: 'whsec_test' });
  t.equal(config.ADMIN_TOKEN, 'admin');
  t.equal(config.PAYMENT_WEBHOOK_SECRET, 'whsec_test');
});

t.test('a value of blanks only is a missing value, for every variable', async (t) => {
  const config = loadConfig({ PAYMENT_WEBHOOK_SECRET: ' ', LINK_SECRET: ' \t ', TRUST_PROXY: '  ', PORT: ' ', ADMIN_TOKEN: '\t' });
  t.equal(config.PAYMENT_WEBHOOK_SECRET, DEV_WEBHOOK_SECRET, 'blank webhook secret: the default, as if unset');
  t.same(config.PAYMENT_WEBHOOK_SECRETS, [DEV_WEBHOOK_SECRET]);
  t.equal(config.LINK_SECRET, DEV_LINK_SECRET, 'blank LINK_SECRET is not used as given');
  t.equal(config.TRUST_PROXY, 'false');
  t.equal(config.PORT, 3000);
  t.equal(config.ADMIN_TOKEN, undefined, 'a blank admin token leaves the admin routes off');
});

t.test('a URL that does not parse stops start-up naming its variable, never quoting the value', async (t) => {
  const cases: [Record<string, string>, string, string][] = [
    [{ DATABASE_URL: 'postgres://u:s3cretpw@[bad' }, 'DATABASE_URL', 's3cretpw'],
    [{ DATABASE_URL: 'postgres://u:pa%ZZword@db/errand' }, 'DATABASE_URL', 'pa%ZZword'],
    [{ SMTP_URL: 'smtp://mailer:hunter2/x@mail.example.com:587' }, 'SMTP_URL', 'hunter2'],
    [{ SMTP_URL: 'smtp://mailer:hunter2@[mail' }, 'SMTP_URL', 'hunter2'],
    [{ PUBLIC_BASE_URL: 'https://u:p4ss@[::1' }, 'PUBLIC_BASE_URL', 'p4ss'],
    [{ PAYMENT_PROVIDER_URL: 'https://k:apikey123@prov:99999' }, 'PAYMENT_PROVIDER_URL', 'apikey123'],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://u:otelpw@[x' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', 'otelpw'],
    [{ REDIS_URL: 'redis://u:redispw@[bad' }, 'REDIS_URL', 'redispw'],
  ];
  for (const [env, name, secret] of cases) {
    const message = configError(t, env);
    t.match(message, name, `${name} → ${message}`);
    t.notOk(message.includes(secret), 'the value is not echoed');
  }
  t.equal(loadConfig({ DATABASE_URL: 'postgres:///errand' }).DATABASE_URL, 'postgres:///errand', 'a socket URL (no host) is fine');
});

t.test('email-event settings: defaults, parsed forms, and one line naming a bad one', async (t) => {
  const defaults = loadConfig({});
  t.same(defaults.EMAIL_EVENTS_SES_TOPIC_ARNS, [], 'SES off');
  t.ok(Object.isFrozen(defaults.EMAIL_EVENTS_SES_TOPIC_ARNS));
  t.equal(defaults.EMAIL_EVENTS_SNS_CERT_HOST, '^sns\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?$');
  t.equal(DEFAULT_SNS_CERT_HOST, defaults.EMAIL_EVENTS_SNS_CERT_HOST);
  const host = new RegExp(defaults.EMAIL_EVENTS_SNS_CERT_HOST);
  t.ok(host.test('sns.eu-west-1.amazonaws.com') && host.test('sns.cn-north-1.amazonaws.com.cn'));
  t.notOk(host.test('sns.eu-west-1.amazonaws.com.evil.example') || host.test('snsXeu.amazonaws.com'));
  t.match(defaults, { EMAIL_SOFT_BOUNCE_LIMIT: 3, EMAIL_SOFT_BOUNCE_WINDOW_DAYS: 7 });
  for (const name of [
    'EMAIL_EVENTS_SENDGRID_PUBLIC_KEY',
    'EMAIL_EVENTS_MAILGUN_SIGNING_KEY',
    'EMAIL_EVENTS_POSTMARK_AUTH',
    'EMAIL_EVENTS_RESEND_SECRET',
  ] as const) {
    t.equal(defaults[name], undefined, `${name} unset`);
    t.equal(loadConfig({ [name]: '  ' })[name], undefined, `${name} blank = unset`);
  }

  const sendgridKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    .publicKey.export({ format: 'der', type: 'spki' })
    .toString('base64');
  const config = loadConfig({
    EMAIL_EVENTS_SES_TOPIC_ARNS: 'arn:aws:sns:us-east-1:123456789012:ses-events, arn:aws-cn:sns:cn-north-1:123456789012:b.fifo,',
    EMAIL_EVENTS_SNS_CERT_HOST: '^sns\\.example\\.test$',
    EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: sendgridKey,
    EMAIL_EVENTS_MAILGUN_SIGNING_KEY: 'key',
    EMAIL_EVENTS_POSTMARK_AUTH: 'postmark:pw',
    EMAIL_EVENTS_RESEND_SECRET: 'whsec_dGVzdA==',
    EMAIL_SOFT_BOUNCE_LIMIT: '5',
    EMAIL_SOFT_BOUNCE_WINDOW_DAYS: '30',
  });
  t.same(config.EMAIL_EVENTS_SES_TOPIC_ARNS, [
    'arn:aws:sns:us-east-1:123456789012:ses-events',
    'arn:aws-cn:sns:cn-north-1:123456789012:b.fifo',
  ]);
  t.match(config, { EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: sendgridKey, EMAIL_SOFT_BOUNCE_LIMIT: 5, EMAIL_SOFT_BOUNCE_WINDOW_DAYS: 30 });

  const rsaKey = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
  const p384Key = generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
    .publicKey.export({ format: 'der', type: 'spki' })
    .toString('base64');
  const cases: [Record<string, string>, string][] = [
    [{ EMAIL_EVENTS_SES_TOPIC_ARNS: 'arn:aws:sqs:us-east-1:123456789012:q' }, 'EMAIL_EVENTS_SES_TOPIC_ARNS'],
    [
      { EMAIL_EVENTS_SES_TOPIC_ARNS: 'arn:aws:sns:us-east-1:123456789012:ok,arn:aws:sns:us-east-1:1234:short' },
      'EMAIL_EVENTS_SES_TOPIC_ARNS',
    ],
    [{ EMAIL_EVENTS_SES_TOPIC_ARNS: 'ses-events' }, 'EMAIL_EVENTS_SES_TOPIC_ARNS'],
    [{ EMAIL_EVENTS_SNS_CERT_HOST: '^sns\\.(amazonaws$' }, 'EMAIL_EVENTS_SNS_CERT_HOST'],
    [{ EMAIL_EVENTS_SNS_CERT_HOST: 'amazonaws\\.com' }, 'EMAIL_EVENTS_SNS_CERT_HOST'],
    [{ EMAIL_EVENTS_SNS_CERT_HOST: '^.*$' }, 'EMAIL_EVENTS_SNS_CERT_HOST'],
    [{ EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: 'not a key' }, 'EMAIL_EVENTS_SENDGRID_PUBLIC_KEY'],
    [{ EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: rsaKey }, 'EMAIL_EVENTS_SENDGRID_PUBLIC_KEY'],
    [{ EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: p384Key }, 'EMAIL_EVENTS_SENDGRID_PUBLIC_KEY'],
    [{ EMAIL_EVENTS_POSTMARK_AUTH: 'no-colon' }, 'EMAIL_EVENTS_POSTMARK_AUTH'],
    [{ EMAIL_EVENTS_POSTMARK_AUTH: 'user:' }, 'EMAIL_EVENTS_POSTMARK_AUTH'],
    [{ EMAIL_EVENTS_RESEND_SECRET: 're_123abc' }, 'EMAIL_EVENTS_RESEND_SECRET'],
    [{ EMAIL_EVENTS_RESEND_SECRET: 'whsec_not base64!' }, 'EMAIL_EVENTS_RESEND_SECRET'],
    [{ EMAIL_SOFT_BOUNCE_LIMIT: '0' }, 'EMAIL_SOFT_BOUNCE_LIMIT'],
    [{ EMAIL_SOFT_BOUNCE_WINDOW_DAYS: 'a week' }, 'EMAIL_SOFT_BOUNCE_WINDOW_DAYS'],
  ];
  for (const [env, name] of cases) {
    const message = configError(t, env);
    t.match(message, name, `${JSON.stringify(env).slice(0, 70)} → ${message}`);
    const value = Object.values(env)[0];
    if (value.length > 8) t.notOk(message.includes(value), 'value not echoed');
  }
});
