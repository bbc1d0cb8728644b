// `npm run soak`: the fault run's driver without faults, at a steady rate for SOAK_DURATION_S (600 s): every
// SOAK_SAMPLE_S (10 s) the RSS of the api and worker processes, Redis used_memory and the outbox table's row count;
// p99 per minute; drift after the warm-up (first vs last sample, and the least-squares slope per minute).
// The email audit of the fault run applies too: nothing lost, nothing repeated. Not part of `npm test`.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { machineInfo, progress, report, round, runScenario, sleep, table } from './lib.js';
import { auditEmails, outstanding, p99Buckets, slope, summariseRoutes } from './faults/analysis.js';
import { drain } from './faults/drain.js';
import { Load } from './faults/load.js';
import { envNumber, startSampler, startStack, WEBHOOK_SECRET, type Sample } from './faults/stack.js';

const DURATION_S = envNumber('SOAK_DURATION_S', 600);
const WARMUP_S = envNumber('SOAK_WARMUP_S', Math.min(120, Math.round(DURATION_S / 5)));
const SAMPLE_S = envNumber('SOAK_SAMPLE_S', 10);
const BUCKET_S = envNumber('SOAK_BUCKET_S', 60);
const RATES = {
  signup: envNumber('SOAK_SIGNUP_RATE', 1000),
  // Each webhook pays an order created just before it, so orders come at the webhook rate.
  order: envNumber('SOAK_ORDER_RATE', envNumber('SOAK_WEBHOOK_RATE', 300)),
  webhook: envNumber('SOAK_WEBHOOK_RATE', 300),
};
const DRAIN_TIMEOUT_S = envNumber('SOAK_DRAIN_TIMEOUT_S', 300);

// outboxRows grows by design (published rows stay until the daily retention job, RETENTION_DAYS); the unpublished
// rows and the email backlog are what must stay flat.
type Metric = 'apiRssMb' | 'workerRssMb' | 'redisUsedMemoryMb' | 'outboxRows' | 'outboxUnpublished' | 'emailBacklog';
const METRICS: Metric[] = ['apiRssMb', 'workerRssMb', 'redisUsedMemoryMb', 'outboxRows', 'outboxUnpublished', 'emailBacklog'];

/** After the warm-up: first and last value, their difference, and the fitted slope per minute. */
function drift(samples: Sample[], metric: Metric, fromS: number, toS: number) {
  const points = samples
    .filter((s) => s.t >= fromS && s.t <= toS && s[metric] !== undefined)
    .map((s) => [s.t / 60, s[metric]!] as [number, number]);
  if (points.length === 0) return { metric, samples: 0 };
  const first = points[0][1];
  const last = points.at(-1)![1];
  const values = points.map(([, y]) => y);
  return {
    metric,
    samples: points.length,
    first: round(first, 1),
    last: round(last, 1),
    min: round(Math.min(...values), 1),
    max: round(Math.max(...values), 1),
    change: round(last - first, 1),
    changePct: first === 0 ? null : round(((last - first) / first) * 100, 1),
    slopePerMin: round(slope(points), 2),
  };
}

await runScenario('soak', async () => {
  const machine = await machineInfo();
  const stack = await startStack({
    prefix: 'SOAK_',
    errandEnv: {
      EMAIL_CONCURRENCY: '64',
      EMAIL_RATE_MAX: '1000000',
      EMAIL_RATE_DURATION_MS: '1000',
      JOB_ATTEMPTS: '12',
      JOB_BACKOFF_MS: '250',
    },
  });
  const load = new Load({
    url: stack.api.url,
    rates: { ...RATES },
    maxInFlight: envNumber('SOAK_MAX_IN_FLIGHT', 2000),
    connections: envNumber('SOAK_CONNECTIONS', 128),
    timeoutMs: envNumber('SOAK_REQUEST_TIMEOUT_S', 30) * 1000,
    webhookSecret: WEBHOOK_SECRET,
    webhookRetries: 20,
    webhookRetryDelayMs: 1000,
    clock: stack.clock,
  });
  const samples: Sample[] = [];
  const stopSampler = startSampler(stack, SAMPLE_S * 1000, (s) => {
    s.emailBacklog = outstanding(load.expected, stack.smtp.received);
    samples.push(s);
    progress(
      `t=${s.t}s api ${s.apiRssMb} MB, worker ${s.workerRssMb} MB, redis ${s.redisUsedMemoryMb} MB, outbox ${s.outboxRows} rows (${s.outboxUnpublished} unpublished), ${s.emailsAccepted} emails, ${s.emailBacklog} owed`,
    );
  });
  progress(
    `soak: ${RATES.signup} signups/s, ${RATES.order} orders/s, ${RATES.webhook} webhooks/s for ${DURATION_S} s (warm-up ${WARMUP_S} s)`,
  );
  const loadStartedAt = stack.clock();
  load.start();
  await sleep(DURATION_S * 1000);
  const loadEndedAt = stack.clock();
  progress('load stopped; waiting for requests in flight');
  await load.stop();
  const endOfLoadS = loadEndedAt / 1000;
  const drainResult = await drain(stack, load, DRAIN_TIMEOUT_S * 1000, 5000);
  await stopSampler();

  const audit = auditEmails(load.expected, stack.smtp.received, [], [], 0);
  const routes = summariseRoutes(load);
  const loadS = (loadEndedAt - loadStartedAt) / 1000;
  const achieved = Object.fromEntries(routes.map((r) => [r.route, round(r['2xx'] / loadS, 1)]));
  const heldTarget = routes.every((r) => RATES[r.route] === 0 || r['2xx'] / loadS >= 0.95 * RATES[r.route]);
  if (!heldTarget) progress(`the machine did not hold the target rate: 2xx/s ${JSON.stringify(achieved)} against ${JSON.stringify(RATES)}`);
  const perMinute = p99Buckets(load, BUCKET_S * 1000, loadStartedAt, loadEndedAt);
  const fromS = loadStartedAt / 1000 + WARMUP_S;
  const drifts = METRICS.map((metric) => drift(samples, metric, fromS, endOfLoadS));
  const lost = audit.summaries.reduce((sum, s) => sum + s.lost, 0);
  const ok = lost === 0 && audit.duplicates.length === 0;
  const results = {
    ok,
    config: { durationS: DURATION_S, warmupS: WARMUP_S, sampleS: SAMPLE_S, targetRates: RATES },
    achievedRates2xx: achieved,
    heldTarget,
    routes,
    perMinute,
    drift: drifts,
    emails: audit.summaries,
    lost: audit.lost.slice(0, 50),
    duplicates: audit.duplicates.slice(0, 50),
    drain: drainResult,
    logs: path.relative(process.cwd(), stack.logDir),
  };
  writeFileSync(path.join(stack.logDir, 'report.json'), `${JSON.stringify({ machine, ...results, samples }, null, 2)}\n`);
  process.stdout.write(`\n## soak: requests per route (target ${JSON.stringify(RATES)}/s, 2xx ${JSON.stringify(achieved)}/s)\n\n`);
  process.stdout.write(table(routes.map((r) => ({ ...r }))));
  process.stdout.write(`\n## soak: per ${BUCKET_S} s (req/s sent and p99 ms)\n\n${table(perMinute)}`);
  process.stdout.write(`\n## soak: samples every ${SAMPLE_S} s\n\n${table(samples.map((s) => ({ ...s })))}`);
  process.stdout.write(`\n## soak: emails\n\n${table(audit.summaries.map((s) => ({ ...s })))}`);
  report(
    'soak',
    machine,
    results,
    drifts.map((d) => ({ ...d, window: `${round(fromS, 0)}-${round(endOfLoadS, 0)} s` })),
  );
  if (!ok) process.exitCode = 1;
});
process.exit(process.exitCode ?? 0);
