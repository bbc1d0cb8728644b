// A cluster primary dies (SIGKILL) while emails are being sent; its replica takes over. Nothing is lost, nothing is sent twice.
import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { settledEmailsPerAddress, startRedisCluster } from '../support/redis-topologies.js';

const SIGNUPS = 40;

t.test('kill the primary holding the queues mid-flight: every email once', async (t) => {
  const cluster = await startRedisCluster(t, { primaries: 3, replicasPerPrimary: 1, nodeTimeoutMs: 1000 });
  const smtp = await startSmtpServer(t);
  // Slow SMTP answers keep jobs active while the primary dies.
  smtp.delayReplies(150);
  const errand = await startTestErrand(
    t,
    testEnv(t, {
      REDIS_URL: cluster.url,
      SMTP_URL: smtp.url,
      EMAIL_CONCURRENCY: '4',
      // A job whose completion was lost with the primary is found stalled and re-run (then skipped: already sent).
      WORKER_LOCK_DURATION_MS: '4000',
      WORKER_STALLED_INTERVAL_MS: '2000',
      LOG_LEVEL: 'warn',
    }),
  );
  const { app, deps } = errand;
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined, 15000, 'ready');

  // Every queue key hashes to the prefix's tag, so one primary holds them all: that is the one to kill.
  const victim = await cluster.primaryFor(`${errand.config.QUEUE_PREFIX}:${EMAIL_QUEUE}:wait`);
  const addresses = Array.from({ length: SIGNUPS }, (_, i) => `failover-${i}@example.com`);
  const accepted: string[] = [];
  const signup = async (email: string) => {
    const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email } });
    if (res.statusCode === 202) accepted.push(email);
    else t.fail(`signup ${email} answered ${res.statusCode}`);
  };

  // First half, then kill the primary once emails are on the wire, then the second half during the failover.
  // Two emails go out, the rest are held at the SMTP server until the kill: under load, 150 ms replies alone
  // could all be answered before a probe saw one in flight (seen: 'timed out waiting for emails in flight').
  const releaseReplies = smtp.holdRepliesAfter(2);
  await Promise.all(addresses.slice(0, SIGNUPS / 2).map(signup));
  await waitFor(() => (smtp.received.length >= 2 && smtp.inFlight > 0) || undefined, 20000, 'emails in flight', {
    // Where the emails stopped: not published, not taken by the worker, or not sent. The queue read may pass the
    // producer's 2 s command timeout in a starved process: the SMTP figures are kept then.
    explain: async () => {
      const unpublished = await deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
      const counts = await deps.queues[EMAIL_QUEUE].getJobCounts('wait', 'active', 'delayed', 'completed', 'failed').catch(
        (readError: Error) => readError.message,
      );
      return (
        `${smtp.attempts} SMTP attempts, ${smtp.received.length} received, ${smtp.inFlight} in flight; ` +
        `${unpublished.length} outbox rows unpublished; email queue ${JSON.stringify(counts)}`
      );
    },
  });
  const inFlightAtKill = smtp.inFlight;
  // Through waitFor: under load a single read can pass the producer connection's 2 s command timeout.
  const activeAtKill = await waitFor(() => deps.queues[EMAIL_QUEUE].getActiveCount(), 10000, 'the active job count');
  await victim.kill();
  const killTime = Date.now();
  releaseReplies();
  t.ok(
    inFlightAtKill > 0 && activeAtKill > 0,
    `jobs in flight when the primary died (${inFlightAtKill} at the SMTP server, ${activeAtKill} active)`,
  );
  await Promise.all(addresses.slice(SIGNUPS / 2).map(signup));
  t.equal(accepted.length, SIGNUPS, 'every signup accepted, during the failover too');

  await cluster.waitUntilHealthy();
  t.comment(`cluster_state:ok again ${Date.now() - killTime} ms after the kill (cluster-node-timeout 1000 ms)`);
  const promoted = await cluster.primaryFor(`${errand.config.QUEUE_PREFIX}:${EMAIL_QUEUE}:wait`);
  t.not(promoted.port, victim.port, `the replica on ${promoted.port} took over from ${victim.port}`);

  await waitFor(() => (new Set(smtp.received.map((e) => e.to[0])).size >= SIGNUPS ? true : undefined), 90000, `${SIGNUPS} distinct emails`);
  t.comment(`last email ${Date.now() - killTime} ms after the kill`);
  // Nothing else may arrive: a job whose lock lapsed would be found by the next stalled check.
  const perAddress = await settledEmailsPerAddress(deps.queues, smtp.received);
  t.same([...perAddress.keys()].sort(), [...accepted].sort(), 'an email for every accepted signup');
  t.same(
    [...perAddress.entries()].filter(([, n]) => n > 1),
    [],
    'no address got two emails',
  );
  const sent = await deps.db
    .selectFrom('sent_emails')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  t.equal(Number(sent.n), SIGNUPS, 'one sent_emails row per email');
  const unpublished = await deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
  t.equal(unpublished.length, 0, 'the outbox is drained');
});
