import t from 'tap';
import { SMTPServer } from 'smtp-server';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { freePort, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// An SMTP server the test can stop, start again on the same port, and make refuse errand's credentials.
const port = await freePort();
const received: string[][] = [];
const state = { authBroken: false };
let server: SMTPServer | undefined;
async function startSmtp() {
  server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    allowInsecureAuth: true,
    logger: false,
    // A stop drops errand's pooled connection at once, as a restarting server does (smtp-server's default waits 30 s).
    closeTimeout: 100,
    onAuth(auth, _session, callback) {
      if (state.authBroken || auth.password !== 'right') return callback(new Error('Invalid username or password'));
      callback(null, { user: auth.username });
    },
    onData(stream, session, callback) {
      stream.resume();
      stream.on('end', () => {
        received.push(session.envelope.rcptTo.map((a) => a.address));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve));
}
async function stopSmtp() {
  await new Promise<void>((resolve) => server!.close(() => resolve()));
}
t.teardown(async () => {
  if (server?.server.listening) await stopSmtp();
});

const errand = await startTestErrand(
  t,
  testEnv(t, {
    SMTP_URL: `smtp://errand:right@127.0.0.1:${port}`,
    JOB_ATTEMPTS: '2',
    JOB_BACKOFF_MS: '200',
    EMAIL_OUTAGE_PAUSE_MS: '100',
    EMAIL_OUTAGE_MAX_PAUSE_MS: '400',
  }),
);
const { app, deps } = errand;
const queue = deps.queues[EMAIL_QUEUE];

async function pauses(cause: string): Promise<number> {
  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  const match = new RegExp(`errand_email_outage_pauses_total\\{cause="${cause}"\\} (\\d+)`).exec(metrics.body);
  return match ? Number(match[1]) : 0;
}

async function signup(email: string) {
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
  t.equal(res.statusCode, 202);
}

const outageLines = () => errand.logs.lines().filter((line) => line.level === 50 && /downstream outage/.test(String(line.msg)));

t.test('SMTP down for longer than every attempt and backoff: no attempt spent, the email goes out once it is back', async (t) => {
  const started = Date.now();
  await signup('down@example.com');
  // Backoff with JOB_ATTEMPTS=2 would give up after ~200 ms; wait for 5 pauses (100+200+400+400 ms at least).
  await waitFor(async () => ((await pauses('smtp-unreachable')) >= 5 ? true : undefined), 30000, '5 outage pauses');
  t.ok(Date.now() - started > 1000, `outage lasted ${Date.now() - started} ms`);
  t.equal(await queue.getFailedCount(), 0, 'nothing failed during the outage');
  // A spent attempt is a 'failed' worker event (counted by errand_jobs_failed_total); a pause is not.
  t.notMatch((await app.inject({ method: 'GET', url: '/metrics' })).body, /errand_jobs_failed_total\{queue="email"/, 'no attempt spent');
  const lines = outageLines().filter((line) => line.cause === 'smtp-unreachable');
  t.ok(lines.length >= 5, 'an error line per pause');
  t.ok(lines.length <= (await pauses('smtp-unreachable')), 'no more lines than pauses');
  t.ok(
    lines.every((line) => typeof line.pauseMs === 'number' && line.pauseMs <= 400),
    'pauses capped',
  );
  t.notOk(JSON.stringify(lines).includes('down@example.com'), 'no address in the lines');

  await startSmtp();
  await waitFor(() => (received.some((to) => to.includes('down@example.com')) ? true : undefined), 30000, 'the email after SMTP is back');
  t.equal(await queue.getFailedCount(), 0, 'failed list empty');
});

t.test('SMTP refusing our credentials (535): paused, not failed; the email goes out once the password works', async (t) => {
  state.authBroken = true;
  // The mailer pools its connection: restart the server so errand has to log in again (as after a password change).
  await stopSmtp();
  await startSmtp();
  await signup('auth@example.com');
  await waitFor(async () => ((await pauses('smtp-auth')) >= 5 ? true : undefined), 30000, '5 auth outage pauses');
  t.equal(await queue.getFailedCount(), 0, 'no email failed as permanent');
  t.notOk(
    received.some((to) => to.includes('auth@example.com')),
    'not sent while refused',
  );
  state.authBroken = false;
  await waitFor(
    () => (received.some((to) => to.includes('auth@example.com')) ? true : undefined),
    30000,
    'the email after the credentials work',
  );
  const failed = await app.inject({ method: 'GET', url: '/metrics' });
  t.notMatch(failed.body, /errand_jobs_failed_total\{queue="email"/, 'no failed attempt recorded');
  t.equal(await queue.getFailedCount(), 0, 'failed list empty');
});
