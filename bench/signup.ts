// Scenario 1: POST /auth/signup at fixed rates and flat out, against its floor
// (the same statement + publish without HTTP) and a naive baseline (SMTP in the request).
import { loadConfig } from '../src/config.js';
import { createDeps, type Deps } from '../src/deps.js';
import { prepareDatabase } from '../src/db/migrations.js';
import { publishAfterCommit } from '../src/outbox/producer.js';
import { signupThrottleKey } from '../src/signup/throttle.js';
import {
  closedLoop,
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
  RUN_SECONDS,
  signupLoad,
  spawnServer,
  startSmtpSink,
  uniqueEmail,
  type LoadSummary,
} from './lib.js';

const FIXED_RATES = [200, 500, 1000];
/** Connections for the fixed-rate runs: enough that a slow answer does not hold back the schedule. */
const RATE_CONNECTIONS = 50;
/** Concurrency of the flat-out runs (HTTP, floor and naive alike). */
const MAX_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

/** The route's work without HTTP: the same statement, then the same publish. */
function signupVia(deps: Deps) {
  const { signupUser } = deps.statements;
  return async () => {
    const email = uniqueEmail();
    const row = await signupUser({ email, name: 'Bench', throttleKey: signupThrottleKey(email) });
    if (row) await publishAfterCommit(deps, [row]);
  };
}

/** The run with the median throughput. */
function medianByRps(runs: LoadSummary[]): LoadSummary {
  return [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)];
}

await runScenario('signup', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();
  const databaseUrl = freshDatabaseUrl();
  const env = errandEnv({
    PORT: String(await freePort()),
    DATABASE_URL: databaseUrl,
    QUEUE_PREFIX: freshQueuePrefix(),
    SMTP_URL: sink.url,
  });

  progress('starting errand (role all)');
  const errand = await spawnServer('src/main.ts', env);
  progress(`warm-up ${Math.min(3, RUN_SECONDS)} s`);
  await signupLoad({ run: 'warm-up', url: errand.url, connections: 10, durationS: Math.min(3, RUN_SECONDS) });

  const runs: LoadSummary[] = [];
  for (const rate of FIXED_RATES) {
    progress(`signup at ${rate} req/s for ${RUN_SECONDS} s`);
    runs.push(await signupLoad({ run: 'signup', url: errand.url, connections: RATE_CONNECTIONS, overallRate: rate }));
  }
  // The floor: what the route does, minus HTTP, from this process, on the same database and pool size.
  const config = loadConfig(env);
  await prepareDatabase(config.DATABASE_URL);
  const deps = createDeps(config, { logDestination: nullStream() });
  onCleanup('close floor deps', () => deps.close());
  await new Promise<void>((resolve) => (deps.redis.status === 'ready' ? resolve() : deps.redis.once('ready', () => resolve())));
  const signupOnce = signupVia(deps);
  await closedLoop({ run: 'warm-up', concurrency: 10, durationS: 1, op: signupOnce });

  // Flat out and floor alternate, ROUNDS times each: on a shared machine the background load drifts, and the
  // ratio of medians of interleaved runs is far steadier than one run of each.
  const maxRuns: LoadSummary[] = [];
  const floorRuns: LoadSummary[] = [];
  for (let i = 1; i <= ROUNDS; i++) {
    progress(`round ${i}/${ROUNDS}: signup flat out, ${MAX_CONNECTIONS} connections`);
    maxRuns.push(await signupLoad({ run: `signup #${i}`, url: errand.url, connections: MAX_CONNECTIONS }));
    progress(`round ${i}/${ROUNDS}: floor (transaction + publish, no HTTP), concurrency ${MAX_CONNECTIONS}`);
    floorRuns.push(await closedLoop({ run: `floor #${i}`, concurrency: MAX_CONNECTIONS, op: signupOnce }));
  }
  const signupMax = medianByRps(maxRuns);
  const floor = medianByRps(floorRuns);
  runs.push(...maxRuns, ...floorRuns);
  await deps.close();

  // Diagnostic, not a target: the floor again with PostgreSQL's commit fsync taken out of the wait,
  // to show how much of the floor is the WAL flush per commit.
  progress('diagnostic: floor with synchronous_commit=off');
  const asyncConfig = loadConfig({ ...env, DATABASE_URL: `${databaseUrl}?options=${encodeURIComponent('-c synchronous_commit=off')}` });
  const asyncDeps = createDeps(asyncConfig, { logDestination: nullStream() });
  onCleanup('close diagnostic deps', () => asyncDeps.close());
  await new Promise<void>((resolve) => (asyncDeps.redis.status === 'ready' ? resolve() : asyncDeps.redis.once('ready', () => resolve())));
  const asyncFloor = await closedLoop({
    run: 'floor, synchronous_commit=off (diagnostic)',
    concurrency: MAX_CONNECTIONS,
    op: signupVia(asyncDeps),
  });
  runs.push(asyncFloor);
  await asyncDeps.close();
  await errand.stop();

  progress('naive baseline (SMTP inside the request, sink delays 100 ms)');
  const slowSink = await startSmtpSink({ delayMs: 100 });
  const naive = await spawnServer(
    'bench/naive-server.ts',
    { ...env, PORT: String(await freePort()), SMTP_URL: slowSink.url },
    { readyPath: '/healthz' },
  );
  await signupLoad({ run: 'warm-up', url: naive.url, connections: 10, durationS: 1 });
  const naiveMax = await signupLoad({ run: 'naive', url: naive.url, connections: MAX_CONNECTIONS });
  runs.push(naiveMax);
  await naive.stop();

  const at500 = runs.find((r) => r.run === 'signup' && r.targetRate === 500)!;
  const ratios = {
    medianSignupMaxRps: signupMax.rps,
    medianFloorRps: floor.rps,
    signupToFloor: round(signupMax.rps / floor.rps, 3),
    signupToNaive: round(signupMax.rps / naiveMax.rps, 1),
  };
  const targets = {
    signupAtLeast70PctOfFloor: ratios.signupToFloor >= 0.7,
    p99AtMost25msAt500: at500.p99 <= 25 && at500.non2xx === 0 && at500.errors === 0,
  };
  report('signup', machine, { runs, ratios, targets, emailsSent: sink.receivedAt.length }, [
    ...runs.map((r) => ({ ...r })),
    { run: 'median signup flat out', rps: signupMax.rps, p99: signupMax.p99 },
    { run: 'median floor', rps: floor.rps, p99: floor.p99 },
    { run: 'ratio signup/floor', rps: ratios.signupToFloor },
    { run: 'ratio signup/naive', rps: ratios.signupToNaive },
  ]);
});
