// `npm run bench`: every scenario in turn, each in its own process (so one
// scenario's leftovers cannot skew the next). Their JSON lines are also
// written to var/bench/<timestamp>.jsonl.
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './lib.js';

const SCENARIOS = ['signup', 'outbox', 'limiter', 'webhook', 'sweep', 'memory'];

const only = process.argv.slice(2);
const dir = path.join(repoRoot, 'var', 'bench');
mkdirSync(dir, { recursive: true });
const out = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`);
let failed = 0;
for (const scenario of only.length ? only : SCENARIOS) {
  const run = spawnSync(process.execPath, ['--import', 'tsx', `bench/${scenario}.ts`], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: process.env,
    maxBuffer: 64 * 2 ** 20,
  });
  const stdout = run.stdout.toString();
  process.stdout.write(stdout);
  for (const line of stdout.split('\n')) if (line.startsWith('{"scenario"')) appendFileSync(out, `${line}\n`);
  if (run.status !== 0) {
    failed += 1;
    process.stderr.write(`bench ${scenario} exited with ${run.status}\n`);
  }
}
process.stderr.write(`results: ${path.relative(repoRoot, out)}\n`);
process.exitCode = failed > 0 ? 1 : 0;
