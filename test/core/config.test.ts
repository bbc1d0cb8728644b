import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';

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
  const production = { NODE_ENV: 'production', PAYMENT_WEBHOOK_SECRET: 's'.repeat(32), LINK_SECRET: 'l'.repeat(32), PUBLIC_BASE_URL: 'https://errand.example.com', SMTP_URL: 'smtp://mail:25' };
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
  t.equal(loadConfig({ PAYMENTS_RECONCILE_CRON: '*/5 * * * * *', PAYMENTS_RECONCILE_TZ: 'Europe/Paris' }).PAYMENTS_RECONCILE_CRON, '*/5 * * * * *');
});

t.test('outside production, short admin tokens and webhook secrets are accepted (production refuses them)', async (t) => {
  const config = loadConfig({ ADMIN_TOKEN: 'admin', PAYMENT_WEBHOOK_SECRET: 'whsec_test' });
  t.equal(config.ADMIN_TOKEN, 'admin');
  t.equal(config.PAYMENT_WEBHOOK_SECRET, 'whsec_test');
});
