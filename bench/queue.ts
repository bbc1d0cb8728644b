// Scenario: the queue side of errand (issue 16). A. outbox relay drain rate over a backlog;
// B. pickup latency, commit → job active, with idle workers; C. email-queue throughput with the
// limiter off at concurrency 1 and 50, in alternating rounds with plain BullMQ workers on the same Redis: one that
// runs errand's own email processor (the same dedupe, token and send: what errand's worker wiring costs on top of
// BullMQ), one that sends the same email to the same SMTP sink through a pooled nodemailer transport (and nothing
// else: no dedupe, no token, no lifecycle lines: what errand's guarantees cost), and one with a no-op processor
// (BullMQ's own ceiling). Each worker is closed before the next starts.
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import nodemailer from 'nodemailer';
import { sql } from 'kysely';
import { loadConfig } from '../src/config.js';
import { prepareDatabase } from '../src/db/migrations.js';
import type { Db } from '../src/db/schema.js';
import { createDeps } from '../src/deps.js';
import { startErrand } from '../src/errand.js';
import { EMAIL_QUEUE } from '../src/queues.js';
import { emailProcessors } from '../src/email/worker.js';
import { composeOrderTrackingEmail } from '../src/payments/tracking-email.js';
import { composeVerificationEmail } from '../src/signup/verification-email.js';
import { verificationEmail } from '../src/email/templates.js';
import { outboxJobId, publishAfterCommit } from '../src/outbox/producer.js';
import { startOutboxRelay } from '../src/outbox/relay.js';
import { signupThrottleKey } from '../src/signup/throttle.js';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  nullStream,
  onMaintenanceDb,
  onCleanup,
  percentile,
  progress,
  REDIS_URL,
  report,
  round,
  runScenario,
  sleep,
  startSmtpSink,
  uniqueEmail,
} from './lib.js';

/** A signup as the route hands it to the statement. */
const signupOf = (email: string, name: string | null) => ({ email, name, throttleKey: signupThrottleKey(email) });

const BACKLOG = Number(process.env.BENCH_RELAY_ROWS ?? 20_000);
const PICKUPS = Number(process.env.BENCH_PICKUPS ?? 200);
const THROUGHPUT_JOBS = Number(process.env.BENCH_THROUGHPUT_JOBS ?? 3000);
const THROUGHPUT_ROUNDS = Number(process.env.BENCH_THROUGHPUT_ROUNDS ?? 3);
if (!Number.isInteger(THROUGHPUT_ROUNDS) || THROUGHPUT_ROUNDS < 1) throw new Error('BENCH_THROUGHPUT_ROUNDS must be a whole number ≥ 1');

async function waitUntil(probe: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * C's clock: `start` sets `worker` going on THROUGHPUT_JOBS jobs already in Redis; jobs/s until the last completes.
 * Every worker is timed from connected and ready, so no one's clock includes a connect or script load.
 */
async function jobsPerSecond(worker: Worker, start: () => unknown, what: string): Promise<number> {
  let completed = 0;
  worker.on('completed', () => (completed += 1));
  const started = performance.now();
  start();
  await waitUntil(() => completed >= THROUGHPUT_JOBS, 300_000, `${THROUGHPUT_JOBS} ${what}`);
  return (THROUGHPUT_JOBS * 1000) / (performance.now() - started);
}

/** A: rows written while Redis was away, then one relay publishing them. */
async function relayDrain() {
  const config = loadConfig(errandEnv({ DATABASE_URL: freshDatabaseUrl(), QUEUE_PREFIX: freshQueuePrefix() }));
  await prepareDatabase(config.DATABASE_URL);
  const deps = createDeps(config, { logDestination: nullStream() });
  const closeDeps = onCleanup('close relay deps', () => deps.close());
  await sql`insert into outbox (queue, job_name, payload)
            select 'email', 'email-verification', jsonb_build_object('userId', g::text) from generate_series(1, ${BACKLOG}) g`.execute(
    deps.db,
  );
  progress(`relay: ${BACKLOG} unpublished rows`);
  const started = performance.now();
  const relay = startOutboxRelay(deps, { intervalMs: 50, graceMs: 0 });
  await waitUntil(
    async () => {
      const { count } = await deps.db
        .selectFrom('outbox')
        .select((eb) => eb.fn.countAll<string>().as('count'))
        .where('published_at', 'is', null)
        .executeTakeFirstOrThrow();
      return Number(count) === 0;
    },
    120_000,
    'the backlog to drain',
  );
  const drainMs = performance.now() - started;
  await relay.stop();
  const counts = await deps.queues[EMAIL_QUEUE].getJobCounts('prioritized', 'waiting');
  await closeDeps();
  return {
    rows: BACKLOG,
    drainMs: Math.round(drainMs),
    jobsPerS: Math.round((BACKLOG * 1000) / drainMs),
    inRedis: (counts.prioritized ?? 0) + (counts.waiting ?? 0),
  };
}

/** B and C share an in-process errand with the limiter effectively off. */
async function startUnlimited(concurrency: number, smtpUrl: string) {
  const config = loadConfig(
    errandEnv({
      PORT: String(await freePort()),
      DATABASE_URL: freshDatabaseUrl(),
      QUEUE_PREFIX: freshQueuePrefix(),
      SMTP_URL: smtpUrl,
      EMAIL_CONCURRENCY: String(concurrency),
      EMAIL_RATE_MAX: '1000000',
      EMAIL_RATE_DURATION_MS: '1000',
    }),
  );
  const errand = await startErrand(config, { logDestination: nullStream() });
  const close = onCleanup('close in-process errand', () => errand.close());
  const worker = errand.workers.find((w) => w.name === EMAIL_QUEUE)!;
  return { errand, worker, close };
}

async function pickupLatency(smtpUrl: string) {
  const { errand, worker, close } = await startUnlimited(1, smtpUrl);
  const activeAt = new Map<string, number>();
  const completed = new Set<string>();
  worker.on('active', (job) => activeAt.set(job.id!, performance.now()));
  worker.on('completed', (job) => completed.add(job.id!));
  const { signupUser } = errand.deps.statements;
  const latencies: number[] = [];
  progress(`pickup: ${PICKUPS} signups one at a time, idle worker`);
  for (let i = 0; i < PICKUPS; i++) {
    const row = (await signupUser(signupOf(uniqueEmail(), null)))!;
    const committedAt = performance.now(); // the statement is its own transaction: it has committed
    await publishAfterCommit(errand.deps, [row]);
    const jobId = outboxJobId(row.id);
    await waitUntil(() => activeAt.has(jobId), 10_000, `job ${jobId} active`);
    latencies.push(activeAt.get(jobId)! - committedAt);
    // Measure the idle-worker path: the job is done and the worker is blocked waiting again.
    await waitUntil(() => completed.has(jobId), 10_000, `job ${jobId} completed`);
    await sleep(10);
  }
  await close();
  latencies.sort((a, b) => a - b);
  return {
    samples: PICKUPS,
    p50Ms: round(percentile(latencies, 50), 2),
    p99Ms: round(percentile(latencies, 99), 2),
    maxMs: round(latencies.at(-1)!, 2),
  };
}

async function errandThroughput(concurrency: number, smtpUrl: string) {
  const { errand, worker, close } = await startUnlimited(concurrency, smtpUrl);
  await worker.pause();
  await addVerificationJobs(errand.deps.db, errand.deps.queues[EMAIL_QUEUE]);
  const jobsPerS = await jobsPerSecond(worker, () => worker.resume(), 'emails');
  await close();
  return jobsPerS;
}

/** THROUGHPUT_JOBS verification emails for fresh users, as `addBulk` jobs in `queue` (returns once they are in Redis). */
async function addVerificationJobs(db: Db, queue: Queue): Promise<void> {
  const users = await sql<{
    id: string;
  }>`insert into users (email) select 'tp' || g || '@example.com' from generate_series(1, ${THROUGHPUT_JOBS}) g returning id::text`.execute(
    db,
  );
  await queue.addBulk(users.rows.map((u, i) => ({ name: 'email-verification', data: { userId: u.id }, opts: { jobId: `tp-${i}` } })));
}

/**
 * Plain BullMQ running errand's own email processor: the same dedupe, token, send and record as errand's worker, on a
 * bare Worker (no payload check, lifecycle lines, metrics, events stream or limiter). errand's worker against this is
 * what its wiring costs.
 */
async function plainErrandProcessorThroughput(concurrency: number, smtpUrl: string) {
  const config = loadConfig(
    errandEnv({
      DATABASE_URL: freshDatabaseUrl(),
      QUEUE_PREFIX: freshQueuePrefix(),
      SMTP_URL: smtpUrl,
      EMAIL_CONCURRENCY: String(concurrency),
    }),
  );
  await prepareDatabase(config.DATABASE_URL);
  const deps = createDeps(config, { logDestination: nullStream() });
  const closeDeps = onCleanup('close plain-processor deps', () => deps.close());
  const processors = emailProcessors(deps, {
    'email-verification': composeVerificationEmail(deps),
    'order-tracking-link': composeOrderTrackingEmail(deps),
  });
  await addVerificationJobs(deps.db, deps.queues[EMAIL_QUEUE]);
  const worker = new Worker(EMAIL_QUEUE, (job) => processors['email-verification'](job.data as { userId: string }, job, undefined), {
    connection: { url: REDIS_URL, maxRetriesPerRequest: null },
    prefix: config.QUEUE_PREFIX,
    concurrency,
    autorun: false,
  });
  const closeWorker = onCleanup('close plain-processor worker', () => worker.close());
  // Timed from a connected worker, as errand's (resumed after its start).
  await worker.waitUntilReady();
  const jobsPerS = await jobsPerSecond(worker, () => void worker.run(), 'plain-processor jobs');
  await closeWorker();
  await closeDeps();
  return jobsPerS;
}

/** Plain BullMQ: a no-op processor, or (with smtpUrl) one that only sends errand's verification email (no reads, no token). */
async function plainBullmqThroughput(concurrency: number, smtpUrl?: string) {
  const prefix = freshQueuePrefix();
  const transport = smtpUrl
    ? nodemailer.createTransport({ url: smtpUrl, pool: true, maxConnections: concurrency } as Parameters<
        typeof nodemailer.createTransport
      >[0])
    : undefined;
  const closeTransport = onCleanup('close plain transport', () => transport?.close());
  const send = async (i: number) => {
    // errand's own template, so the message (text + HTML) is byte for byte the kind errand sends.
    const email = verificationEmail(`plain${i}@example.com`, `http://127.0.0.1/auth/verify-email?token=${'x'.repeat(43)}`);
    await transport?.sendMail({ from: 'bench <no-reply@localhost>', ...email });
  };
  const queue = new Queue('plain', { connection: { url: REDIS_URL }, prefix });
  const closeQueue = onCleanup('close plain queue', () => queue.close());
  await queue.addBulk(
    Array.from({ length: THROUGHPUT_JOBS }, (_, i) => ({ name: 'noop', data: { i }, opts: { removeOnComplete: { count: 1000 } } })),
  );
  const worker = new Worker('plain', async (job) => send(job.data.i as number), {
    connection: { url: REDIS_URL, maxRetriesPerRequest: null },
    prefix,
    concurrency,
    autorun: false,
  });
  const closeWorker = onCleanup('close plain worker', () => worker.close());
  await worker.waitUntilReady();
  const jobsPerS = await jobsPerSecond(worker, () => void worker.run(), 'plain jobs');
  await closeWorker();
  await closeQueue();
  await closeTransport();
  return jobsPerS;
}

/** Median of a few numbers (the middle one; the lower middle for an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

type Yardstick = 'errand' | 'plainErrandProcessor' | 'plainSend';

/**
 * Between two measurements: PostgreSQL writes out what the previous one left dirty (CHECKPOINT) and the machine
 * idles a second, so the next worker does not pay for the previous one's writes (the rotation alone cannot make
 * every worker follow every other equally often in three rounds).
 */
async function settle(): Promise<void> {
  await onMaintenanceDb((client) => client.query('checkpoint'));
  await sleep(1000);
}

/**
 * C at one concurrency: THROUGHPUT_ROUNDS rounds of errand's worker and the two plain workers that do an email's work,
 * each round in a rotated order (a slow spell of this shared machine lands on a different worker each round), each
 * worker closed before the next starts. Ratios are taken within a round, then their median: single runs here differ
 * by ±10–20 %, more than what the comparison is about.
 */
async function throughputRounds(concurrency: number, smtpUrl: string) {
  const measure: Record<Yardstick, () => Promise<number>> = {
    errand: () => errandThroughput(concurrency, smtpUrl),
    plainErrandProcessor: () => plainErrandProcessorThroughput(concurrency, smtpUrl),
    plainSend: () => plainBullmqThroughput(concurrency, smtpUrl),
  };
  const order = Object.keys(measure) as Yardstick[];
  const rounds: Array<Record<Yardstick, number>> = [];
  for (let r = 0; r < THROUGHPUT_ROUNDS; r++) {
    const jobsPerS = {} as Record<Yardstick, number>;
    for (const name of [...order.slice(r % order.length), ...order.slice(0, r % order.length)]) {
      await settle();
      progress(`throughput, concurrency ${concurrency}, round ${r + 1}: ${name}`);
      jobsPerS[name] = await measure[name]();
    }
    rounds.push(jobsPerS);
  }
  const noop = await plainBullmqThroughput(concurrency);
  const medianOf = (pick: (round: Record<Yardstick, number>) => number) => median(rounds.map(pick));
  return {
    rounds: rounds.map((jobsPerS) => Object.fromEntries(Object.entries(jobsPerS).map(([k, v]) => [k, round1(v)]))),
    errand: round1(medianOf((x) => x.errand)),
    plainErrandProcessor: round1(medianOf((x) => x.plainErrandProcessor)),
    plainSend: round1(medianOf((x) => x.plainSend)),
    plainNoop: round1(noop),
    errandOverPlainErrandProcessor: round(
      medianOf((x) => x.errand / x.plainErrandProcessor),
      2,
    ),
    errandOverPlainSend: round(
      medianOf((x) => x.errand / x.plainSend),
      2,
    ),
  };
}

const round1 = (value: number) => round(value, 1);

await runScenario('queue', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();
  const relay = await relayDrain();
  progress(`relay: ${relay.jobsPerS} jobs/s`);
  const pickup = await pickupLatency(sink.url);
  progress(`pickup p50 ${pickup.p50Ms} ms, p99 ${pickup.p99Ms} ms`);
  const throughput = { c1: await throughputRounds(1, sink.url), c50: await throughputRounds(50, sink.url) };
  const rows = (['c1', 'c50'] as const).flatMap((key) => {
    const t = throughput[key];
    const c = key.slice(1);
    return [
      { measure: `email worker, limiter off, concurrency ${c} (jobs/s, median)`, value: t.errand },
      { measure: `plain BullMQ worker running errand's email processor, concurrency ${c}`, value: t.plainErrandProcessor },
      { measure: `plain BullMQ worker sending the same email, concurrency ${c}`, value: t.plainSend },
      { measure: `plain BullMQ no-op worker, concurrency ${c}`, value: t.plainNoop },
      {
        measure: `email worker / errand's processor on plain BullMQ, / plain sending worker, concurrency ${c} (median of round ratios)`,
        value: `${t.errandOverPlainErrandProcessor} / ${t.errandOverPlainSend}`,
      },
    ];
  });
  report('queue', machine, { relay, pickup, throughputRounds: THROUGHPUT_ROUNDS, throughput }, [
    { measure: `relay drain of ${relay.rows} rows (jobs/s)`, value: relay.jobsPerS },
    { measure: 'pickup commit → active p50 / p99 / max (ms)', value: `${pickup.p50Ms} / ${pickup.p99Ms} / ${pickup.maxMs}` },
    ...rows,
  ]);
});
