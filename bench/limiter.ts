// Scenario 3: email limiter accuracy. 300 verification emails through the
// email worker with the default limiter (EMAIL_RATE_MAX=1 per EMAIL_RATE_DURATION_MS=150),
// timed by when the SMTP sink receives each message.
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { startErrand } from '../src/errand.js';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  nullStream,
  onCleanup,
  progress,
  report,
  round,
  runScenario,
  sleep,
  startSmtpSink,
  uniqueEmail,
} from './lib.js';

const JOBS = Number(process.env.BENCH_LIMITER_JOBS ?? 300);

/** Most arrivals inside any window of `windowMs` (timestamps ascending). */
function maxInWindow(times: number[], windowMs: number): number {
  let best = 0;
  let start = 0;
  for (let end = 0; end < times.length; end++) {
    while (times[end] - times[start] >= windowMs) start++;
    best = Math.max(best, end - start + 1);
  }
  return best;
}

await runScenario('limiter', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();
  // Defaults for the limiter and concurrency: nothing about the email worker is overridden.
  const config = loadConfig(
    errandEnv({ PORT: String(await freePort()), DATABASE_URL: freshDatabaseUrl(), QUEUE_PREFIX: freshQueuePrefix(), SMTP_URL: sink.url }),
  );
  const errand = await startErrand(config, { logDestination: nullStream() });
  onCleanup('close in-process errand', () => errand.close());

  progress(`queuing ${JOBS} verification emails through POST /auth/signup`);
  const queuedFrom = performance.now();
  for (let i = 0; i < JOBS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, JOBS - i) }, async () => {
        const response = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: uniqueEmail() } });
        if (response.statusCode !== 202) throw new Error(`signup answered ${response.statusCode}`);
      }),
    );
  }
  const queuedMs = performance.now() - queuedFrom;

  progress(
    `waiting for ${JOBS} emails (about ${Math.round((JOBS * config.EMAIL_RATE_DURATION_MS) / config.EMAIL_RATE_MAX / 1000)} s by design)`,
  );
  const deadline = performance.now() + 10 * 60_000;
  while (sink.receivedAt.length < JOBS && performance.now() < deadline) await sleep(100);
  const times = sink.receivedAt.slice(0, JOBS);
  if (times.length < JOBS) throw new Error(`only ${times.length} of ${JOBS} emails arrived`);

  const configuredPerS = (config.EMAIL_RATE_MAX * 1000) / config.EMAIL_RATE_DURATION_MS;
  const spanMs = times.at(-1)! - times[0];
  const achievedPerS = ((times.length - 1) * 1000) / spanMs;
  const gaps = times
    .slice(1)
    .map((t, i) => t - times[i])
    .sort((a, b) => a - b);
  // A limiter of `max` per `duration` can start at most max * (floor(1000 / duration) + 1) jobs in a 1 s window.
  const allowedIn1s = config.EMAIL_RATE_MAX * (Math.floor(1000 / config.EMAIL_RATE_DURATION_MS) + 1);
  const results = {
    jobs: JOBS,
    limiter: { max: config.EMAIL_RATE_MAX, durationMs: config.EMAIL_RATE_DURATION_MS, concurrency: config.EMAIL_CONCURRENCY },
    queuedMs: Math.round(queuedMs),
    configuredPerS: round(configuredPerS, 3),
    achievedPerS: round(achievedPerS, 3),
    deviationPct: round(((achievedPerS - configuredPerS) / configuredPerS) * 100, 2),
    maxIn1sWindow: maxInWindow(times, 1000),
    allowedIn1sWindow: allowedIn1s,
    gapMs: { min: round(gaps[0], 1), p50: round(gaps[Math.floor(gaps.length / 2)], 1), max: round(gaps.at(-1)!, 1) },
    // The rate between stalls: a few long gaps (CPU starvation on a shared box) pull the mean down.
    medianGapPerS: round(1000 / gaps[Math.floor(gaps.length / 2)], 3),
    totalS: round((times.at(-1)! - queuedFrom) / 1000, 2),
    firstToLastS: round(spanMs / 1000, 2),
  };
  const targets = {
    within2Pct: Math.abs(results.deviationPct) <= 2,
    neverAbove: achievedPerS <= configuredPerS && results.maxIn1sWindow <= allowedIn1s,
  };
  report('limiter', machine, { ...results, targets }, [
    { measure: 'configured (jobs/s)', value: results.configuredPerS },
    { measure: 'achieved (jobs/s, first → last email)', value: results.achievedPerS },
    { measure: 'deviation (%)', value: results.deviationPct },
    { measure: 'rate from the median gap (jobs/s)', value: results.medianGapPerS },
    { measure: 'max emails in any 1 s window', value: `${results.maxIn1sWindow} (limit ${allowedIn1s})` },
    { measure: 'gap between emails min / p50 / max (ms)', value: `${results.gapMs.min} / ${results.gapMs.p50} / ${results.gapMs.max}` },
    { measure: `total time, first signup → email ${JOBS} (s)`, value: results.totalS },
  ]);
});
