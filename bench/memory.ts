// Scenario 6: start-up time (spawn → first /readyz 200) and RSS of an `all`-role
// process after start and after 10,000 signups.
import { execFileSync } from 'node:child_process';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  progress,
  repoRoot,
  report,
  round,
  runScenario,
  signupLoad,
  sleep,
  spawnServer,
  startSmtpSink,
} from './lib.js';

const SIGNUPS = Number(process.env.BENCH_MEMORY_SIGNUPS ?? 10_000);
const WARM_STARTS = 3;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

await runScenario('memory', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();

  progress('building dist/ (npm run build) for the production start');
  execFileSync('npm', ['run', 'build'], { cwd: repoRoot, stdio: 'inherit' });

  const modes = [
    { mode: 'tsx src/main.ts', script: 'src/main.ts', tsx: true },
    { mode: 'node dist/main.js', script: 'dist/main.js', tsx: false },
  ];
  const rows: Array<Record<string, unknown>> = [];
  const results: Record<string, unknown>[] = [];
  for (const { mode, script, tsx } of modes) {
    const env = errandEnv({
      PORT: String(await freePort()),
      DATABASE_URL: freshDatabaseUrl(),
      QUEUE_PREFIX: freshQueuePrefix(),
      SMTP_URL: sink.url,
    });
    progress(`${mode}: first start (creates the database and migrates)`);
    const first = await spawnServer(script, env, { tsx });
    await sleep(1000);
    const rssAfterStart = first.rssMb();
    progress(`${mode}: ${SIGNUPS} signups`);
    const load = await signupLoad({ run: 'memory', url: first.url, connections: CONNECTIONS, amount: SIGNUPS });
    const rssAfterSignups = first.rssMb();
    await sleep(5000);
    const afterSignups = {
      signups: load.requests,
      rps: load.rps,
      non2xx: load.non2xx,
      rssAfterSignupsMb: round(rssAfterSignups),
      rssAfter5sIdleMb: round(first.rssMb()),
    };
    await first.stop();

    const warm: number[] = [];
    for (let i = 0; i < WARM_STARTS; i++) {
      const child = await spawnServer(script, env, { tsx });
      warm.push(child.readyMs);
      await child.stop();
    }
    const result = {
      mode,
      readyColdMs: Math.round(first.readyMs),
      readyWarmMedianMs: Math.round(median(warm)),
      readyWarmMs: warm.map(Math.round),
      rssAfterStartMb: round(rssAfterStart),
      ...afterSignups,
    };
    results.push(result);
    rows.push({ ...result, readyWarmMs: result.readyWarmMs.join(' / ') });
  }

  // Targets per mode: tsx is how the benches and `npm start` run, dist is the production start.
  const targets = Object.fromEntries(
    (results as Array<{ mode: string; readyWarmMedianMs: number; rssAfterSignupsMb: number }>).map((r) => [
      r.mode,
      { rssUnder150MbAfter10kSignups: r.rssAfterSignupsMb < 150, readyUnder1500Ms: r.readyWarmMedianMs < 1500 },
    ]),
  );
  report('memory', machine, { results, targets }, rows);
});
