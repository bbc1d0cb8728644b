import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, environmentWithDotenv, loadConfig } from '../../src/config.js';
import { signWebhook } from '../../src/core/webhook-signature.js';
import { builtMainScript, childEnv, scriptArgs, spawnErrand, testEnv } from '../support/helpers.js';

function tempDirWithDotenv(t: { teardown(fn: () => void): void }, content: string | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), 'errand-dotenv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  if (content !== undefined) writeFileSync(join(dir, '.env'), content);
  return dir;
}

function run(
  cwd: string,
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd,
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('environmentWithDotenv: .env fills gaps, the real environment wins', async (t) => {
  const dir = tempDirWithDotenv(
    t,
    '# a comment\nLOG_LEVEL=debug\nEMAIL_CONCURRENCY=4\nMAIL_FROM="errand <x@example.com>"\nSMTP_URL=smtp://dotenv:25\n',
  );
  const env = environmentWithDotenv({ EMAIL_CONCURRENCY: '2', SMTP_URL: '' }, dir);
  t.equal(env.LOG_LEVEL, 'debug', 'taken from .env');
  t.equal(env.MAIL_FROM, 'errand <x@example.com>', 'quotes removed');
  t.equal(env.EMAIL_CONCURRENCY, '2', 'the environment wins');
  t.equal(env.SMTP_URL, '', 'a variable set empty in the environment still wins (and then means unset)');
  const config = loadConfig(env);
  t.equal(config.EMAIL_CONCURRENCY, 2);
  t.equal(config.SMTP_URL, undefined);
  t.equal(config.LOG_LEVEL, 'debug');
});

t.test('environmentWithDotenv: no .env is the environment alone; an unreadable one is a config error', async (t) => {
  const empty = tempDirWithDotenv(t, undefined);
  t.same(environmentWithDotenv({ PORT: '1' }, empty), { PORT: '1' });
  const broken = tempDirWithDotenv(t, undefined);
  mkdirSync(join(broken, '.env'));
  t.throws(() => environmentWithDotenv({}, broken), ConfigError);
  t.throws(() => environmentWithDotenv({}, broken), /\.env/);
});

t.test('a script run in a directory with .env reads it; a real variable overrides it', async (t) => {
  const dir = tempDirWithDotenv(t, 'PAYMENT_WEBHOOK_SECRET=secret-from-dotenv\n');
  const body = '{"id":"evt_1"}';
  const args = [...scriptArgs('sign-webhook.ts'), '--timestamp', '1700000000', body];

  const fromFile = await run(dir, args, {});
  t.equal(fromFile.code, 0, fromFile.stderr);
  t.equal(fromFile.stdout.trim(), signWebhook('secret-from-dotenv', Buffer.from(body), 1700000000));

  const fromEnv = await run(dir, args, { PAYMENT_WEBHOOK_SECRET: 'secret-from-env' });
  t.equal(fromEnv.code, 0, fromEnv.stderr);
  t.equal(fromEnv.stdout.trim(), signWebhook('secret-from-env', Buffer.from(body), 1700000000));
});

t.test('errand reads .env at start: a bad value there stops it naming the variable', async (t) => {
  const dir = tempDirWithDotenv(t, 'EMAIL_CONCURRENCY=many\n');
  const result = await run(dir, [builtMainScript()], { NODE_ENV: 'test' });
  t.equal(result.code, 1);
  t.match(result.stderr.trim(), /^invalid configuration: .*EMAIL_CONCURRENCY/);
  t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
});

t.test('errand started in a directory with .env uses it, under the real environment', async (t) => {
  const token = 'admin-token-from-dotenv-0123456789';
  // EMAIL_CONCURRENCY in .env is invalid: errand only starts because the environment's value wins.
  const dir = tempDirWithDotenv(t, `ADMIN_TOKEN=${token}\nEMAIL_CONCURRENCY=many\nROLE=worker\n`);
  const errand = await spawnErrand(t, testEnv(t, { EMAIL_CONCURRENCY: '2', ROLE: 'all' }), {
    cwd: dir,
  });
  const res = await fetch(`${errand.baseUrl}/admin/queues`, { headers: { authorization: `Bearer ${token}` } });
  await res.body?.cancel();
  t.equal(res.status, 200, 'ADMIN_TOKEN came from .env (and ROLE=all from the environment: admin routes exist)');
  const exit = await errand.stop();
  t.equal(exit.code, 0);
});
