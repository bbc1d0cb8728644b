// Scenario 2: outbox publish lag (commit → job visible in Redis) at the signup
// max rate, and the backlog after Redis is down for 5 s (drain time, lost jobs).
import { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { performance } from 'node:perf_hooks';
import { EMAIL_QUEUE } from '../src/queues.js';
import { outboxJobId } from '../src/outbox/producer.js';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  onCleanup,
  percentile,
  progress,
  report,
  round,
  runScenario,
  RUN_SECONDS,
  signupLoad,
  sleep,
  spawnServer,
  startPrivateRedis,
  startSmtpSink,
  REDIS_URL,
} from './lib.js';

const MAX_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const OUTAGE_RATE = 200;
const OUTAGE_BEFORE_MS = 5000;
const OUTAGE_MS = 5000;
const OUTAGE_AFTER_MS = 5000;

async function pgClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  onCleanup('close bench pg client', () => client.end());
  return client;
}

function phaseStats(latencies: number[], non2xx: number) {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    responses: sorted.length,
    non2xx,
    p50: round(percentile(sorted, 50)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.at(-1) ?? NaN),
  };
}

await runScenario('outbox', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();

  // ---- A. publish lag at max rate
  const prefix = freshQueuePrefix();
  const databaseUrl = freshDatabaseUrl();
  const env = errandEnv({ PORT: String(await freePort()), DATABASE_URL: databaseUrl, QUEUE_PREFIX: prefix, SMTP_URL: sink.url });
  progress('starting errand (role all)');
  const errand = await spawnServer('src/main.ts', env);

  // The 'added' event's stream id is Redis's clock at the moment the job became visible.
  const addedAtMs = new Map<string, number>();
  const events = new QueueEvents(EMAIL_QUEUE, { connection: { url: REDIS_URL, maxRetriesPerRequest: null }, prefix });
  events.on('error', () => {});
  onCleanup('close QueueEvents', () => events.close());
  events.on('added', ({ jobId }: { jobId: string }, id: string) => addedAtMs.set(jobId, Number(id.split('-')[0])));
  await events.waitUntilReady();
  await sleep(300);

  progress(`signup flat out for ${RUN_SECONDS} s, ${MAX_CONNECTIONS} connections, recording publish lag`);
  const load = await signupLoad({ run: 'signup', url: errand.url, connections: MAX_CONNECTIONS });
  await sleep(1000);
  const db = await pgClient(databaseUrl);
  // created_at is now() at transaction start: lag measured from it is an upper bound of commit → visible.
  const { rows } = await db.query<{ id: string; created_ms: string; published: boolean }>(
    `SELECT id, (extract(epoch FROM created_at) * 1000)::float8 AS created_ms, published_at IS NOT NULL AS published FROM outbox`,
  );
  const lags: number[] = [];
  for (const row of rows) {
    const added = addedAtMs.get(outboxJobId(row.id));
    if (added !== undefined) lags.push(added - Number(row.created_ms));
  }
  lags.sort((a, b) => a - b);
  const lag = {
    outboxRows: rows.length,
    matched: lags.length,
    unpublished: rows.filter((r) => !r.published).length,
    p50: round(percentile(lags, 50), 1),
    p99: round(percentile(lags, 99), 1),
    max: round(lags.at(-1) ?? NaN, 1),
    loadRps: load.rps,
  };
  await events.close();
  await errand.stop();

  // ---- B. Redis down for 5 s under load
  progress('outage: private redis-server, errand on it, signups at 200 req/s; redis killed for 5 s');
  const redis = await startPrivateRedis();
  const outagePrefix = freshQueuePrefix(redis.url);
  const outageDbUrl = freshDatabaseUrl();
  const outage = await spawnServer(
    'src/main.ts',
    errandEnv({
      PORT: String(await freePort()),
      DATABASE_URL: outageDbUrl,
      QUEUE_PREFIX: outagePrefix,
      SMTP_URL: sink.url,
      REDIS_URL: redis.url,
    }),
  );
  const odb = await pgClient(outageDbUrl);
  const pgNow = async () => (await odb.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0].now;

  const phases = { before: [] as number[], during: [] as number[], after: [] as number[] };
  const non2xx = { before: 0, during: 0, after: 0 };
  let phase: keyof typeof phases = 'before';
  const loadStart = performance.now();
  const outageLoad = signupLoad({
    run: 'signup (redis outage)',
    url: outage.url,
    connections: 50,
    overallRate: OUTAGE_RATE,
    durationS: (OUTAGE_BEFORE_MS + OUTAGE_MS + OUTAGE_AFTER_MS) / 1000,
    onResponse: (status, ms) => {
      phases[phase].push(ms);
      if (status < 200 || status > 299) non2xx[phase] += 1;
    },
  });
  await sleep(OUTAGE_BEFORE_MS);
  await redis.kill();
  phase = 'during';
  const killedAt = await pgNow();
  progress('redis killed');
  await sleep(OUTAGE_MS);
  await redis.start();
  phase = 'after';
  const restartedAt = await pgNow();
  const restartedPerf = performance.now();
  progress('redis restarted; waiting for the backlog to drain');

  // Drained: nothing written before the restart is still unpublished.
  let drainMs = NaN;
  while (performance.now() - restartedPerf < 60_000) {
    const { rows: left } = await odb.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL AND created_at <= $1',
      [restartedAt],
    );
    if (left[0].n === 0) {
      drainMs = performance.now() - restartedPerf;
      break;
    }
    await sleep(50);
  }
  const outageSummary = await outageLoad;
  const loadMs = performance.now() - loadStart;
  // Let the relay take any row written in the last instants of the load.
  const settleDeadline = performance.now() + 30_000;
  let unpublished = -1;
  while (performance.now() < settleDeadline) {
    unpublished = (await odb.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL')).rows[0].n;
    if (unpublished === 0) break;
    await sleep(200);
  }

  // Every row published after the restart must have its job in the new Redis (or already sent).
  const { rows: after } = await odb.query<{ id: string }>('SELECT id FROM outbox WHERE published_at >= $1 ORDER BY id', [restartedAt]);
  const sent = new Set((await odb.query<{ job_id: string }>('SELECT job_id FROM sent_emails')).rows.map((r) => r.job_id));
  const checker = new Redis(redis.url);
  const exists = await checker.pipeline(after.map((r) => ['exists', `${outagePrefix}:${EMAIL_QUEUE}:${outboxJobId(r.id)}`])).exec();
  checker.disconnect();
  const missing = after.filter((r, i) => exists?.[i]?.[1] !== 1 && !sent.has(outboxJobId(r.id))).length;
  const counts = (
    await odb.query<{ during: number; published_before_kill: number; total: number }>(
      `SELECT count(*) FILTER (WHERE created_at > $1 AND created_at <= $2)::int AS during,
              count(*) FILTER (WHERE published_at < $1)::int AS published_before_kill,
              count(*)::int AS total
         FROM outbox`,
      [killedAt, restartedAt],
    )
  ).rows[0];
  const redisOutage = {
    rate: OUTAGE_RATE,
    loadMs: Math.round(loadMs),
    signups2xx: outageSummary.requests,
    outboxRows: counts.total,
    createdDuringOutage: counts.during,
    publishedAfterRestart: after.length,
    drainMs: Math.round(drainMs),
    unpublishedAtEnd: unpublished,
    jobsLost: missing + Math.max(unpublished, 0),
    // Informational: jobs already in the killed Redis vanish with it, because this bench Redis has no persistence.
    inRedisMemoryAtKill: counts.published_before_kill,
    responses: {
      before: phaseStats(phases.before, non2xx.before),
      during: phaseStats(phases.during, non2xx.during),
      after: phaseStats(phases.after, non2xx.after),
    },
  };
  await outage.stop();

  report('outbox', machine, { lag, redisOutage }, [
    { measure: 'publish lag p50 (ms, tx start → visible)', value: lag.p50 },
    { measure: 'publish lag p99 (ms)', value: lag.p99 },
    { measure: 'publish lag max (ms)', value: lag.max },
    { measure: 'rows matched / outbox rows', value: `${lag.matched} / ${lag.outboxRows}` },
    { measure: 'load during lag run (req/s)', value: lag.loadRps },
    { measure: 'outage: rows created while Redis down', value: redisOutage.createdDuringOutage },
    { measure: 'outage: drain after restart (ms)', value: redisOutage.drainMs },
    { measure: 'outage: jobs lost', value: redisOutage.jobsLost },
    { measure: 'outage: signup p99 during outage (ms)', value: redisOutage.responses.during.p99 },
    { measure: 'outage: non-2xx during outage', value: redisOutage.responses.during.non2xx },
  ]);
});
