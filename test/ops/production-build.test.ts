import t from 'tap';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { REDIS_URL, REPO_ROOT, freshDatabaseUrl, freshQueuePrefix, spawnErrand, startSmtpServer, waitFor } from '../support/helpers.js';

// Build + a production `npm ci` on a shared 2-core machine: allow minutes, not seconds.
t.setTimeout(600_000);

const run = promisify(execFile);

t.test('npm run build, production install, node dist/main.js as api and as worker', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'errand-prod-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  // The real build script, written to the temp dir so a working tree's dist/ is left alone.
  await run('npm', ['run', 'build', '--', '--outDir', path.join(dir, 'dist')], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  await cp(path.join(REPO_ROOT, 'migrations'), path.join(dir, 'migrations'), { recursive: true });
  await cp(path.join(REPO_ROOT, 'package.json'), path.join(dir, 'package.json'));
  await cp(path.join(REPO_ROOT, 'package-lock.json'), path.join(dir, 'package-lock.json'));
  await run('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });

  const smtp = await startSmtpServer(t);
  const env = {
    NODE_ENV: 'production',
    PORT: '0',
    DATABASE_URL: freshDatabaseUrl(t),
    REDIS_URL,
    QUEUE_PREFIX: freshQueuePrefix(t),
    PAYMENT_WEBHOOK_SECRET: 'production-test-webhook-secret',
    LINK_SECRET: 'production-test-link-secret-0123456789abcdef',
    SMTP_URL: smtp.url,
    MAIL_DIR: path.join(dir, 'var/mail'),
    EMAIL_RATE_DURATION_MS: '10',
    LOG_LEVEL: 'info',
  };
  // Both at once: concurrent database creation and migration must be safe.
  const [api, worker] = await Promise.all(
    (['api', 'worker'] as const).map((role) => spawnErrand(t, { ...env, ROLE: role }, { command: process.execPath, args: ['dist/main.js'], cwd: dir, readyTimeoutMs: 60000 })),
  );
  const [apiPort, workerPort] = [api!.port, worker!.port];
  t.pass('both roles ready');

  // The split end to end: the api publishes, the worker delivers.
  const signup = await fetch(`http://127.0.0.1:${apiPort}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'prod@example.com' }),
  });
  t.equal(signup.status, 202);
  await signup.arrayBuffer();
  const workerSignup = await fetch(`http://127.0.0.1:${workerPort}/auth/signup`, { method: 'POST' });
  t.equal(workerSignup.status, 404, 'the worker serves no public routes');
  await workerSignup.arrayBuffer();
  const [email] = await smtp.waitForEmails(1, 60000);
  t.same(email!.to, ['prod@example.com']);
  // The email arrives before the worker records the job as completed (sent_emails, then the completed event).
  const completed = /errand_jobs_completed_total\{queue="email",name="email-verification"\} 1/;
  const metrics = await waitFor(async () => {
    const text = await (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text();
    return completed.test(text) ? text : undefined;
  }, 15000, 'the completed counter').catch(async () => (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text());
  t.match(metrics, completed);

  for (const [role, errand] of [['api', api!], ['worker', worker!]] as const) {
    errand.child.kill('SIGTERM');
    const exit = await errand.exited;
    t.same(exit, { code: 0, signal: null }, `${role} exits 0 on SIGTERM`);
  }
});
