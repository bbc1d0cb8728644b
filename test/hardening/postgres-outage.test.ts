import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import {
  freshDatabaseUrl,
  startSmtpServer,
  startTcpProxy,
  startTestErrand,
  testEnv,
  waitFor,
  waitForOutboxDrained,
} from '../support/helpers.js';

const smtp = await startSmtpServer(t);
const direct = new URL(freshDatabaseUrl(t));
// Cutting the proxy looks like PostgreSQL going away for this errand only; the shared server is never touched.
const proxy = await startTcpProxy(t, { host: direct.hostname, port: Number(direct.port || 5432) });
const viaProxy = new URL(direct);
viaProxy.port = String(proxy.port);

const errand = await startTestErrand(
  t,
  testEnv(t, {
    DATABASE_URL: viaProxy.toString(),
    SMTP_URL: smtp.url,
    JOB_ATTEMPTS: '2',
    JOB_BACKOFF_MS: '200',
    EMAIL_OUTAGE_PAUSE_MS: '100',
    EMAIL_OUTAGE_MAX_PAUSE_MS: '400',
  }),
);
const { app, deps } = errand;
const queue = deps.queues[EMAIL_QUEUE];

async function metric(pattern: RegExp): Promise<number> {
  const body = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const match = pattern.exec(body);
  return match ? Number(match[1]) : 0;
}

t.test('PostgreSQL unreachable inside an email job: no attempt spent, the email goes out after', async (t) => {
  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'pg@example.com' } });
  t.equal(signup.statusCode, 202);
  await smtp.waitForEmails(1);
  // Its job done too, sent_emails row and all: cut before that commits, and the one email slot (EMAIL_CONCURRENCY 1)
  // stays busy retrying the record until PostgreSQL is back, so the resend below never starts (seen under load).
  await waitForOutboxDrained(deps);
  const user = await deps.db.selectFrom('users').select('id').where('email', '=', 'pg@example.com').executeTakeFirstOrThrow();

  await proxy.cut();
  // A resend of the verification email, queued while PostgreSQL is away (Redis is fine).
  await queue.add('email-verification', { userId: user.id }, { jobId: 'resend-during-pg-outage', priority: 1 });
  await waitFor(
    async () => ((await metric(/errand_email_outage_pauses_total\{cause="postgres-unreachable"\} (\d+)/)) >= 5 ? true : undefined),
    30000,
    '5 pauses for PostgreSQL',
    {
      // What the job met instead: its state and errand's last warning and error lines.
      explain: async () => {
        const job = await queue.getJob('resend-during-pg-outage');
        const errors = errand.logs
          .lines()
          .filter((line) => Number(line.level) >= 40)
          .slice(-3)
          .map(
            (line) =>
              `${String(line.msg)} (${JSON.stringify(line.cause ?? '')} ${String((line.err as { message?: string } | undefined)?.message ?? '')})`,
          );
        return `job ${await job?.getState()}, attempts ${job?.attemptsMade}; last errors: ${errors.join('; ')}`;
      },
    },
  );
  t.equal(await queue.getFailedCount(), 0, 'nothing failed');
  t.equal(await metric(/errand_jobs_failed_total\{queue="email",name="email-verification"\} (\d+)/), 0, 'no attempt spent');
  t.equal(smtp.received.length, 1, 'nothing sent while PostgreSQL is away');

  await proxy.restore();
  const emails = await smtp.waitForEmails(2, 30000);
  t.same(emails[1].to, ['pg@example.com'], 'the email went out once PostgreSQL was back');
  const job = await queue.getJob('resend-during-pg-outage');
  await waitFor(async () => ((await job!.getState()) === 'completed' ? true : undefined), 10000, 'job completed');
  t.equal(await queue.getFailedCount(), 0, 'failed list empty');
  const lines = errand.logs.lines().filter((line) => line.level === 50 && line.cause === 'postgres-unreachable');
  t.ok(lines.length >= 5, `${lines.length} error lines, one per pause`);
});
