// `npm test`: the tap suite and the static checks (tsc, eslint, prettier) side by side, not one after the other.
// tsc and eslint are single-threaded and the tap files spend much of their time waiting on real processes and
// timers, so on a 2-core machine the checks fill idle CPU instead of adding ~2 minutes in front of the tests.
// tap's output streams as it comes; the checks' output is printed when they are done. Exit code: 1 if anything failed.
import { spawn } from 'node:child_process';
import process from 'node:process';

const CHECKS = [
  ['tsc', ['--noEmit']],
  ['eslint', ['.']],
  ['prettier', ['--check', '.']],
];

/** Runs a local bin; resolves to its exit code and, when captured, its output. */
function run(bin, args, capture) {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'inherit', env: process.env });
    let output = '';
    if (capture) for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk) => (output += chunk));
    child.on('error', (error) => resolve({ code: 1, output: `${output}${error.message}\n` }));
    child.on('exit', (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), output }));
  });
}

async function runChecks() {
  const results = [];
  // One after another: each is CPU-bound, and tap is using the other core.
  for (const [bin, args] of CHECKS) {
    const started = Date.now();
    const { code, output } = await run(bin, args, true);
    results.push({ name: [bin, ...args].join(' '), code, output, seconds: (Date.now() - started) / 1000 });
  }
  return results;
}

const [tap, checks] = await Promise.all([run('tap', ['--disable-coverage', ...process.argv.slice(2)], false), runChecks()]);
let failed = tap.code !== 0;
for (const check of checks) {
  process.stdout.write(`\n# ${check.name}: ${check.code === 0 ? 'ok' : `FAILED (exit ${check.code})`} in ${check.seconds.toFixed(1)} s\n`);
  if (check.output.trim()) process.stdout.write(check.output.endsWith('\n') ? check.output : `${check.output}\n`);
  if (check.code !== 0) failed = true;
}
process.exitCode = failed ? 1 : 0;
