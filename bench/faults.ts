// `npm run faults`: errand as separate api and worker processes on its own redis-server, database and SMTP server,
// under steady signups, orders and signed payment webhooks, while faults are injected one after another. Then it
// waits for the backlog and counts: every 2xx signup owes one verification email, every paid order exactly one
// tracking email. Exit 0 only when nothing was lost and every repeat followed a worker kill -9 between SMTP
// acceptance and the send's record. Not part of `npm test`. Knobs: docs/RELIABILITY.md.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { machineInfo, progress, report, round, runScenario, sleep, table } from './lib.js';
import {
  auditEmails,
  backlogDrainedAfter,
  firstOkAfter,
  outstanding,
  summariseRoutes,
  type FaultWindow,
  type KillEvent,
} from './faults/analysis.js';
import { drain } from './faults/drain.js';
import { FAULTS, setKillDownMs } from './faults/faults.js';
import { Load, ROUTES } from './faults/load.js';
import { envNumber, startStack, WEBHOOK_SECRET, type Sample, startSampler } from './faults/stack.js';

const DURATION_S = envNumber('FAULTS_DURATION_S', 240);
const WARMUP_S = envNumber('FAULTS_WARMUP_S', 10);
const HOLD_S = envNumber('FAULTS_HOLD_S', 8);
const KILL_DOWN_S = envNumber('FAULTS_KILL_DOWN_S', 1);
const RATES = {
  signup: envNumber('FAULTS_SIGNUP_RATE', 100),
  order: envNumber('FAULTS_ORDER_RATE', 30),
  webhook: envNumber('FAULTS_WEBHOOK_RATE', 30),
};
const DRAIN_TIMEOUT_S = envNumber('FAULTS_DRAIN_TIMEOUT_S', 180);
const SETTLE_S = envNumber('FAULTS_SETTLE_S', 10);
/** A repeat counts as "killed between acceptance and record" when the kill came at most this long after the first copy. */
const KILL_WINDOW_MS = envNumber('FAULTS_KILL_WINDOW_MS', 10_000);
const SELECTED = (process.env.FAULTS_ONLY ?? '')
  .split(',')
  .map((name) => name.trim())
  .filter(Boolean);

const faults = SELECTED.length ? FAULTS.filter((fault) => SELECTED.includes(fault.name)) : FAULTS;
const unknown = SELECTED.filter((name) => !FAULTS.some((fault) => fault.name === name));
if (unknown.length) {
  process.stderr.write(`FAULTS_ONLY names unknown faults: ${unknown.join(', ')} (known: ${FAULTS.map((f) => f.name).join(', ')})\n`);
  process.exit(2);
}
// The faults are spread over the run: warm-up, then per fault its hold and a recovery gap. A duration too short for
// that is stretched (gap at least FAULTS_MIN_GAP_S) and said so.
const MIN_GAP_S = envNumber('FAULTS_MIN_GAP_S', 5);
const GAP_S =
  process.env.FAULTS_GAP_S !== undefined
    ? envNumber('FAULTS_GAP_S', 15)
    : Math.max(MIN_GAP_S, (DURATION_S - WARMUP_S - faults.length * HOLD_S) / Math.max(1, faults.length));
setKillDownMs(KILL_DOWN_S * 1000);

await runScenario('faults', async () => {
  const machine = await machineInfo();
  const stack = await startStack({
    prefix: 'FAULTS_',
    errandEnv: {
      // The backlog must drain at the offered rate, so no throttle and many concurrent sends.
      EMAIL_CONCURRENCY: '32',
      EMAIL_RATE_MAX: '100000',
      EMAIL_RATE_DURATION_MS: '1000',
      // A 451 window of a few seconds must not exhaust the attempts: 12 attempts at 250 ms doubling span minutes.
      JOB_ATTEMPTS: '12',
      JOB_BACKOFF_MS: '250',
      // A killed worker's active jobs are taken over within seconds, not the default 30 s.
      WORKER_LOCK_DURATION_MS: '5000',
      WORKER_STALLED_INTERVAL_MS: '5000',
      // After an SMTP outage the queue resumes within a few seconds.
      EMAIL_OUTAGE_PAUSE_MS: '500',
      EMAIL_OUTAGE_MAX_PAUSE_MS: '4000',
      // The relay looks at a row 2 s after its commit and every 500 ms after: a fault held for FAULTS_HOLD_S (8 s)
      // spans more than OUTBOX_MAX_FAILURES (5) relay passes over the rows it caught.
      OUTBOX_RELAY_INTERVAL_MS: '500',
      OUTBOX_RELAY_GRACE_MS: '2000',
    },
  });
  const load = new Load({
    url: stack.api.url,
    rates: { ...RATES },
    maxInFlight: envNumber('FAULTS_MAX_IN_FLIGHT', 2000),
    connections: envNumber('FAULTS_CONNECTIONS', 64),
    timeoutMs: envNumber('FAULTS_REQUEST_TIMEOUT_S', 30) * 1000,
    webhookSecret: WEBHOOK_SECRET,
    webhookRetries: envNumber('FAULTS_WEBHOOK_RETRIES', 20),
    webhookRetryDelayMs: 1000,
    clock: stack.clock,
  });
  const samples: Sample[] = [];
  const stopSampler = startSampler(stack, envNumber('FAULTS_SAMPLE_S', 5) * 1000, (s) => {
    s.emailBacklog = outstanding(load.expected, stack.smtp.received);
    samples.push(s);
  });
  const kills: KillEvent[] = [];
  const windows: Array<FaultWindow & { notes: string[]; error?: string }> = [];

  const plannedS = WARMUP_S + faults.length * (HOLD_S + GAP_S);
  progress(
    `load: ${RATES.signup} signups/s, ${RATES.order} orders/s, ${RATES.webhook} webhooks/s; ${faults.length} faults, hold ${HOLD_S} s, gap ${round(GAP_S, 1)} s; ~${round(Math.max(plannedS, DURATION_S), 0)} s${
      plannedS > DURATION_S + 1 ? ` (FAULTS_DURATION_S=${DURATION_S} stretched to fit the faults)` : ''
    }`,
  );
  const loadStartedAt = stack.clock();
  load.start();
  await sleep(WARMUP_S * 1000);
  for (const fault of faults) {
    const notes: string[] = [];
    const injectedAt = stack.clock();
    progress(`fault ${fault.name}: ${fault.does.replace(/<hold>/g, `${HOLD_S} s`).replace(/<kill down>/g, `${KILL_DOWN_S} s`)}`);
    let error: string | undefined;
    try {
      await fault.run({ stack, holdMs: HOLD_S * 1000, kills, notes });
    } catch (err) {
      error = (err as Error).message;
      progress(`fault ${fault.name} failed to inject/recover: ${error}`);
    }
    const recoveredAt = stack.clock();
    windows.push({ name: fault.name, injectedAt, recoveredAt, notes, ...(error ? { error } : {}) });
    await sleep(GAP_S * 1000);
  }
  const remaining = loadStartedAt + DURATION_S * 1000 - stack.clock();
  if (remaining > 0) await sleep(remaining);
  const loadEndedAt = stack.clock();
  progress('load stopped; waiting for requests in flight');
  await load.stop();
  const drainResult = await drain(stack, load, DRAIN_TIMEOUT_S * 1000, SETTLE_S * 1000);
  await stopSampler();
  const final = samples.at(-1);

  const audit = auditEmails(load.expected, stack.smtp.received, kills, windows, KILL_WINDOW_MS);
  const routes = summariseRoutes(load);
  const baseline = summariseRoutes(load, loadStartedAt + 2000, loadStartedAt + WARMUP_S * 1000);
  const faultRows = windows.map((w) => {
    const during = summariseRoutes(load, w.injectedAt, w.recoveredAt);
    const row: Record<string, unknown> = {
      fault: w.name,
      held_s: round((w.recoveredAt - w.injectedAt) / 1000, 1),
    };
    for (const r of during) {
      row[`${r.route}_sent`] = r.sent;
      row[`${r.route}_2xx`] = r['2xx'];
      row[`${r.route}_p99_ms`] = r.p99;
    }
    for (const route of ROUTES) row[`${route}_first_2xx_after_ms`] = firstOkAfter(load, route, w.recoveredAt) ?? 'never';
    row.backlog_drained_after_ms = backlogDrainedAfter(load.expected, stack.smtp.received, w.recoveredAt) ?? 'lost';
    return row;
  });

  const lost = audit.summaries.reduce((sum, s) => sum + s.lost, 0);
  const badDuplicates = audit.duplicates.filter((d) => !d.allowed);
  const ok = lost === 0 && badDuplicates.length === 0 && windows.every((w) => !w.error);
  const results = {
    ok,
    config: {
      durationS: DURATION_S,
      loadS: round((loadEndedAt - loadStartedAt) / 1000, 1),
      warmupS: WARMUP_S,
      holdS: HOLD_S,
      gapS: round(GAP_S, 1),
      killDownS: KILL_DOWN_S,
      rates: RATES,
      killWindowMs: KILL_WINDOW_MS,
      faults: faults.map((f) => f.name),
    },
    routes,
    baseline: baseline.map(({ route, p50, p99, max }) => ({ route, p50, p99, max })),
    webhooks: {
      redeliveries: load.webhookRedeliveries,
      givenUp: load.webhooksGivenUp,
      withoutOrderToPay: load.webhooksWithoutOrder,
      ...load.backlog(),
    },
    faults: windows.map((w, i) => ({ ...faultRows[i], notes: w.notes, error: w.error })),
    emails: audit.summaries,
    lost: audit.lost.slice(0, 50),
    duplicates: audit.duplicates.slice(0, 200),
    duplicatesNotAllowed: badDuplicates.length,
    unpromisedEmails: audit.unpromised,
    smtpRejected451: stack.smtp.rejected(),
    processStartFailures: { api: stack.api.startFailures(), worker: stack.worker.startFailures() },
    drain: drainResult,
    final,
    logs: path.relative(process.cwd(), stack.logDir),
  };
  writeFileSync(path.join(stack.logDir, 'report.json'), `${JSON.stringify({ machine, ...results, samples }, null, 2)}\n`);

  process.stdout.write(`\n## faults: requests per route\n\n${table(routes.map((r) => ({ ...r })))}`);
  process.stdout.write(`\n## faults: per fault (requests sent during the fault; recovery after it)\n\n${table(faultRows)}`);
  process.stdout.write(`\n## faults: emails\n\n${table(audit.summaries.map((s) => ({ ...s })))}`);
  if (audit.duplicates.length)
    process.stdout.write(
      `\n## faults: repeated emails\n\n${table(
        audit.duplicates
          .slice(0, 50)
          .map((d) => ({ recipient: d.recipient, kind: d.kind, allowed: d.allowed, explanation: d.explanation })),
      )}`,
    );
  if (audit.lost.length)
    process.stdout.write(`\n## faults: lost emails (first 20)\n\n${table(audit.lost.slice(0, 20).map((l) => ({ ...l })))}`);
  report('faults', machine, results, [
    { check: 'lost emails', value: lost },
    { check: 'repeats not explained by a worker kill -9', value: badDuplicates.length },
    { check: 'repeats after a worker kill -9 (allowed)', value: audit.duplicates.length - badDuplicates.length },
    { check: 'faults that could not be injected', value: windows.filter((w) => w.error).length },
    { check: 'verdict', value: ok ? 'PASS' : 'FAIL' },
  ]);
  if (!ok) process.exitCode = 1;
});
process.exit(process.exitCode ?? 0);
