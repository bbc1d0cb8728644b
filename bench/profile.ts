// CPU profile of errand under signup load: `node --cpu-prof` on the `all`-role
// child, then self time grouped by package and by function.
// Usage: npm run bench:profile [-- path/to/existing.cpuprofile [fromMs toMs]]
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
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
  RUN_SECONDS,
  signupLoad,
  spawnServer,
  startSmtpSink,
  table,
} from './lib.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);

/** node_modules/<pkg>, node:internal, errand's own file, or V8's pseudo-frames. */
function category(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const inRepo = url.indexOf(repoRoot.replace(/\/$/, ''));
  return inRepo >= 0 ? url.slice(inRepo + repoRoot.length) : url;
}

/** Self time per frame, counting only samples between `window.fromMs` and `window.toMs` after the profile started. */
function summariseProfile(profile: CpuProfile, window: { fromMs: number; toMs: number } = { fromMs: 0, toMs: Infinity }) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<number, number>();
  let atUs = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    atUs += delta;
    if (atUs < window.fromMs * 1000 || atUs > window.toMs * 1000) return;
    self.set(id, (self.get(id) ?? 0) + delta);
  });
  const totalUs = [...self.values()].reduce((a, b) => a + b, 0);
  const idleUs = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, us]) => a + us, 0);
  const busyUs = totalUs - idleUs;
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  // Native and node: frames charged to the nearest library or errand frame above them (who asked for the writev?).
  const callers = new Map<string, number>();
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') continue;
    const cat = category(frame.url, frame.functionName);
    let owner: string | undefined;
    for (let at: number | undefined = id; at !== undefined && owner === undefined; at = parent.get(at)) {
      const f = byId.get(at)!.callFrame;
      const c = category(f.url, f.functionName);
      if (f.url && !c.startsWith('node:')) owner = c;
    }
    const ownerName = owner ?? (cat.startsWith('(') && cat !== '(native)' ? cat : 'node core (no library frame above)');
    callers.set(ownerName, (callers.get(ownerName) ?? 0) + us);
    categories.set(cat, (categories.get(cat) ?? 0) + us);
    const fn = `${frame.functionName || '(anonymous)'} ${cat}:${frame.lineNumber + 1}`;
    functions.set(fn, (functions.get(fn) ?? 0) + us);
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, selfMs: round(us / 1000, 0), pctOfBusy: round((us / busyUs) * 100, 1) }));
  return {
    totalMs: round(totalUs / 1000, 0),
    busyMs: round(busyUs / 1000, 0),
    idlePct: round((idleUs / totalUs) * 100, 1),
    byPackage: top(categories, 15),
    byCallerPackage: top(callers, 15),
    byFunction: top(functions, 20),
  };
}

/** The main thread's profile of `pid` (CPU.<date>.<time>.<pid>.<thread>.<seq>; thread 0 is main, tsx's loader hooks run in another). */
function mainThreadProfile(dir: string, pid: number): string {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(pid) && f.split('.')[4] === '0')
    .map((f) => path.join(dir, f));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  return files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

await runScenario('profile', async () => {
  const machine = await machineInfo();
  let file = process.argv[2];
  let load: unknown;
  // Only the load counts: start-up (module loading) would otherwise dominate the profile.
  let window = { fromMs: Number(process.argv[3] ?? 0), toMs: Number(process.argv[4] ?? Infinity) };
  if (!file) {
    const dir = path.join(repoRoot, 'var', 'prof');
    mkdirSync(dir, { recursive: true });
    const sink = await startSmtpSink();
    const env = errandEnv({
      PORT: String(await freePort()),
      DATABASE_URL: freshDatabaseUrl(),
      QUEUE_PREFIX: freshQueuePrefix(),
      SMTP_URL: sink.url,
      // As operators run it (the other benches run at warn).
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
    });
    progress('starting errand with --cpu-prof');
    const errand = await spawnServer('src/main.ts', env, { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    await signupLoad({ run: 'warm-up', url: errand.url, connections: 10, durationS: 2 });
    progress(`signup flat out for ${RUN_SECONDS} s`);
    const fromMs = performance.now() - errand.spawnedAt;
    load = await signupLoad({ run: 'signup (profiled)', url: errand.url, connections: CONNECTIONS });
    window = { fromMs: Math.round(fromMs), toMs: Math.round(performance.now() - errand.spawnedAt) };
    // The profile is written when the process exits (graceful stop on SIGTERM).
    await errand.stop();
    file = mainThreadProfile(dir, errand.proc.pid!);
  }
  const summary = { window, ...summariseProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, window) };
  process.stdout.write(`\nprofile: ${path.relative(repoRoot, file)} (${summary.busyMs} ms busy, ${summary.idlePct}% idle)\n`);
  process.stdout.write(`\n### self time by package / file\n\n`);
  const byPackage = summary.byPackage.map((r) => ({ ...r }));
  process.stdout.write(table(byPackage));
  process.stdout.write(`\n### self time charged to the nearest library / errand frame (native and node: frames included)\n\n`);
  process.stdout.write(table(summary.byCallerPackage.map((r) => ({ ...r }))));
  report(
    'profile',
    machine,
    { file: path.relative(repoRoot, file), load, ...summary },
    summary.byFunction.map((r) => ({ ...r })),
  );
});
