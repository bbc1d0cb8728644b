import t from 'tap';
import { ConfigError, DEV_LINK_SECRET, DEV_WEBHOOK_SECRET, loadConfig } from '../../src/config.js';
import { PAYMENTS_RECONCILE_QUEUE, PAYMENTS_SWEEP_JOB } from '../../src/reconcile/jobs.js';
import { REDIS_URL, freshDatabaseUrl, freshQueuePrefix, spawnErrand, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

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
      if (change[name as keyof typeof change]) t.notOk(message.includes(change[name as keyof typeof change]!), 'value not echoed');
    }
  }
  const config = loadConfig(COMPLETE);
  t.equal(config.LINK_SECRET, 'l'.repeat(40), 'a complete production config loads');
  t.equal(loadConfig({ ...COMPLETE, ADMIN_TOKEN: undefined }).ADMIN_TOKEN, undefined, 'ADMIN_TOKEN may stay unset');
  t.equal(loadConfig({}).PAYMENT_WEBHOOK_SECRET, DEV_WEBHOOK_SECRET, 'outside production the dev defaults apply');
});

t.test('TRUST_PROXY forms', async (t) => {
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, 'true');
  t.ok(loadConfig({ TRUST_PROXY: '2' }));
  t.ok(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 192.168.1.1, ::1/128' }));
  t.throws(() => loadConfig({ TRUST_PROXY: 'maybe' }), /TRUST_PROXY/);
  t.throws(() => loadConfig({ TRUST_PROXY: '10.0.0.0/33' }), /TRUST_PROXY/);
});

t.test('a refused production start exits 1 with one line naming the variable', async (t) => {
  const child = await spawnErrand(t, { ...COMPLETE, PAYMENT_WEBHOOK_SECRET: 'too-short', DATABASE_URL: freshDatabaseUrl(t), REDIS_URL, QUEUE_PREFIX: freshQueuePrefix(t) }, { waitReady: false });
  const exit = await child.exited;
  t.equal(exit.code, 1);
  t.equal(child.stderr.length, 1, `one line: ${child.stderr.join(' | ')}`);
  t.match(child.stderr[0], /PAYMENT_WEBHOOK_SECRET/);
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

  const job = await errand.deps.queues[PAYMENTS_RECONCILE_QUEUE].add(PAYMENTS_SWEEP_JOB, { windowHours: 1, limit: 10 }, { jobId: 'sweep-prod-test' });
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
  t.same(warnings[0]!.variables, ['PAYMENT_WEBHOOK_SECRET', 'LINK_SECRET']);
});
