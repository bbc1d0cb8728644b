import t from 'tap';
import { SMTPServer } from 'smtp-server';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { spawnErrand, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

// Two tsx-started child processes on a shared machine: be generous.
t.setTimeout(300_000);

/** An SMTP server that never answers the first message's DATA (the worker is killed while waiting) and accepts the rest. */
async function startStallingSmtp() {
  const delivered: string[][] = [];
  let attempts = 0;
  let firstDataArrived!: () => void;
  const firstData = new Promise<void>((resolve) => (firstDataArrived = resolve));
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    // The held connection is dropped 1 s into the teardown's close (smtp-server's default waits 30 s).
    closeTimeout: 1000,
    onData(stream, session, callback) {
      stream.resume();
      stream.on('end', () => {
        attempts += 1;
        if (attempts === 1) {
          firstDataArrived();
          return; // hold the reply: the job is mid-send when the worker dies
        }
        delivered.push(session.envelope.rcptTo.map((a) => a.address));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.server.address() as { port: number };
  return {
    url: `smtp://127.0.0.1:${port}`,
    delivered,
    firstData,
    get attempts() {
      return attempts;
    },
  };
}

t.test('a worker killed with SIGKILL mid-job loses nothing: another worker completes it, one email', async (t) => {
  const smtp = await startStallingSmtp();
  const env = testEnv(t, { SMTP_URL: smtp.url });
  // The producer side runs here (api role: no worker); the workers are real processes.
  const api = await startTestErrand(t, { ...env, ROLE: 'api' });
  const workerEnv = {
    ...env,
    ROLE: 'worker',
    PORT: '0',
    LOG_LEVEL: 'info',
    WORKER_LOCK_DURATION_MS: '1000',
    WORKER_STALLED_INTERVAL_MS: '500',
  };
  // Resolves once the worker listens (PORT=0: the port comes from its log).
  const start = () => spawnErrand(t, workerEnv, { waitReady: false });

  const first = await start();
  const res = await api.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'survivor@example.com' } });
  t.equal(res.statusCode, 202);
  const row = await api.deps.db.selectFrom('outbox').select(['id', 'published_at']).executeTakeFirstOrThrow();
  const jobId = `outbox-${row.id}`;

  await smtp.firstData;
  t.equal(await (await api.deps.queues[EMAIL_QUEUE].getJob(jobId))?.getState(), 'active', 'the job is active when the worker dies');
  first.child.kill('SIGKILL');
  t.same(await first.exited, { code: null, signal: 'SIGKILL' });

  // Not awaited yet: the bound below counts from the spawn.
  const starting = start();
  await waitFor(() => (smtp.delivered.length >= 1 ? true : undefined), 90000, 'the email from the second worker');
  await waitFor(
    async () => ((await (await api.deps.queues[EMAIL_QUEUE].getJob(jobId))?.getState()) === 'completed' ? true : undefined),
    30000,
    'job completed',
  );
  t.pass('the job completed on the second worker');
  // Completed is final, and the first worker died before its message was answered: nothing else is on its way.
  t.same(smtp.delivered, [['survivor@example.com']], 'exactly one email delivered');
  const sent = await api.deps.db.selectFrom('sent_emails').select('job_id').execute();
  t.same(sent, [{ job_id: jobId }]);
  const second = await starting;
  t.ok(
    second.stdout.some((line) => line.includes('"event":"stalled"') && line.includes(jobId)),
    'the second worker logged the stalled job',
  );
  const metrics = await fetch(`${second.baseUrl}/metrics`);
  t.equal(sampleValue(parsePrometheus(await metrics.text()), 'errand_jobs_stalled_total', { queue: EMAIL_QUEUE }), 1, 'and counted it');

  second.child.kill('SIGTERM');
  t.same(await second.exited, { code: 0, signal: null }, 'graceful stop exits 0');
});
