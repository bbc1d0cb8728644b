import { stat } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { REPO_ROOT, spawnErrand, startSmtpServer, testEnv, waitFor } from '../support/helpers.js';

t.test('a bad config value stops start-up with one line naming it', async (t) => {
  const errand = await spawnErrand(t, { ...testEnv(t), EMAIL_RATE_MAX: 'lots' }, { waitReady: false });
  const { code } = await errand.exited;
  t.equal(code, 1);
  t.equal(errand.stderr.length, 1, 'one line');
  t.match(errand.stderr[0], /EMAIL_RATE_MAX/);
});

t.test('npm start: src/ bundled into dist/, served from dist/main.js in the one node process, stops on SIGTERM', async (t) => {
  const startedAt = Date.now();
  // What `npm start` runs (npm itself would sit between the test and errand and not pass SIGTERM on).
  const errand = await spawnErrand(t, testEnv(t), { args: ['scripts/start.mjs'], readyTimeoutMs: 60000 });
  const built = await stat(path.join(REPO_ROOT, 'dist', 'main.js'));
  t.ok(built.mtimeMs >= startedAt - 1000, 'dist/main.js written by this start');
  const res = await fetch(`${errand.baseUrl}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'started@example.com' }),
  });
  t.equal(res.status, 202);
  await res.text();
  t.ok(
    errand.logLines().some((line) => line.pid === errand.child.pid && line.msg === 'errand started'),
    'errand runs in the started process itself',
  );
  errand.child.kill('SIGTERM');
  t.same(await errand.exited, { code: 0, signal: null }, 'graceful stop, exit 0');
});

/**
 * Until an email of the spawned errand is at the SMTP server. Its first job runs cold code in a fresh process: two
 * suites at once on 2 cores took longer than 15 s once, so 30 s, and a timeout says how far the job got.
 */
async function emailInFlight(smtp: { inFlight: number; attempts: number }, errand: { logLines(): Record<string, unknown>[] }) {
  await waitFor(() => smtp.inFlight > 0 || undefined, 30000, 'email in flight', {
    explain: () => {
      const lines = errand
        .logLines()
        .slice(-5)
        .map((line) => `${String(line.msg)}${typeof line.event === 'string' ? ` (${line.event})` : ''}`);
      return `${smtp.attempts} SMTP attempts; errand's last lines: ${lines.join('; ')}`;
    },
  });
}

t.test('SIGTERM during an active job: the job completes, then the process exits 0', async (t) => {
  const smtp = await startSmtpServer(t);
  // The server holds its answer until the stop has begun: a reply delayed by a fixed time could come before a loaded
  // test process saw the email in flight.
  const releaseReply = smtp.holdRepliesAfter(0);
  const errand = await spawnErrand(t, testEnv(t, { SMTP_URL: smtp.url, LOG_LEVEL: 'info' }));

  const res = await fetch(`${errand.baseUrl}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'busy@example.com' }),
  });
  t.equal(res.status, 202);
  await res.text();
  // The email's data has reached the server, which is holding its answer: the job is mid-flight.
  await emailInFlight(smtp, errand);
  errand.child.kill('SIGTERM');
  await waitFor(() => errand.stdout.some((line) => line.includes('"msg":"stopping"')) || undefined, 15000, 'the graceful stop to begin');
  releaseReply();

  const { code, signal } = await errand.exited;
  t.equal(code, 0, 'exit 0');
  t.equal(signal, null);
  t.equal(smtp.received.length, 1, 'the active email was delivered');
  t.ok(
    errand.stdout.some((line) => line.includes('"event":"completed"') && line.includes('"source":"worker"')),
    'the job completed before exit',
  );
  t.ok(
    errand.stdout.some((line) => line.includes('"msg":"stopped"')),
    'logged the stop',
  );
});

t.test('SIGTERM with a job that outlives the grace period still exits, within the bound', async (t) => {
  const smtp = await startSmtpServer(t);
  smtp.delayReplies(20000);
  const errand = await spawnErrand(t, testEnv(t, { SMTP_URL: smtp.url, LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '1000' }));
  const res = await fetch(`${errand.baseUrl}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'slow@example.com' }),
  });
  await res.text();
  await emailInFlight(smtp, errand);
  const started = Date.now();
  errand.child.kill('SIGTERM');
  const { code } = await errand.exited;
  t.equal(code, 0, 'exit 0 after forcing the worker closed');
  t.ok(Date.now() - started < 15000, 'did not wait for the 20 s job');
  t.ok(
    errand.stdout.some((line) => line.includes('forcing the worker closed')),
    'said so in the log',
  );
});

t.test('a second signal during a graceful stop exits at once with code 1', async (t) => {
  const smtp = await startSmtpServer(t);
  smtp.delayReplies(60000);
  // A grace period far longer than the test: only the second signal can end the process in time.
  const errand = await spawnErrand(t, testEnv(t, { SMTP_URL: smtp.url, LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '120000' }), {
    readyTimeoutMs: 90000,
  });
  const res = await fetch(`${errand.baseUrl}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'twice@example.com' }),
  });
  await res.text();
  await emailInFlight(smtp, errand);
  errand.child.kill('SIGTERM');
  await waitFor(() => errand.stdout.some((line) => line.includes('"msg":"stopping"')) || undefined, 15000, 'the graceful stop to begin');
  errand.child.kill('SIGTERM');
  const { code } = await errand.exited;
  t.equal(code, 1, 'exit 1: the stop was cut short');
  t.ok(
    errand.stderr.some((line) => line.includes('second SIGTERM')),
    'said why on stderr',
  );
  t.notOk(
    errand.stdout.some((line) => line.includes('"msg":"stopped"')),
    'the graceful stop did not finish',
  );
  t.equal(smtp.received.length, 0, 'the held email was not delivered');
});
