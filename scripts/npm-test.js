// `npm test`: esbuild bundles each test file into .test-bundle/, and errand's entry point and the scripts into
// .test-main/ for the tests that spawn them (a few seconds in all), then Node's built-in test runner (node:test's
// run()) runs each bundled test file in a node process of its own, several at once, and reads the TAP that the tap
// library prints. No TypeScript loader (tsx: ~2.3 s of CPU per file), no tap runner hooks (its process-info loader
// hooks every module a file loads: ~1.5 s) and no loading of ~900 separate modules (~1.2 s) in a test process:
// together they were about two thirds of the suite's CPU. `npm run test:coverage` runs the .test-build/ files under tap's runner.
// The static checks (tsc, eslint, prettier) are `npm run check`, which .ci/run runs before this.
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { pipeline } from 'node:stream/promises';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { TEST_BUNDLE_DIR, bundleMainForTests, bundleTests } from './transpile-src.mjs';

const ROOT = path.join(import.meta.dirname, '..');

/** Test files at once: most of a file's time is waiting, but 5 at once starved the CPU-bound ones (browsers, spawned errands) past their principled latency bounds on 2 cores. */
const CONCURRENCY = Number(process.env.TEST_CONCURRENCY ?? 4);

/**
 * Per file, in seconds: the slowest (a kill -9 resume, a Redis failover) take about a minute alone. 180 s is the
 * whole suite's budget: a file still running then has failed it anyway. A hang fails much sooner, in the bounded
 * wait it hung in (waitFor, within, the teardowns in test/support), with what it waited for.
 */
const FILE_TIMEOUT_S = 180;

/**
 * Started first, so that no minute-long file begins last and runs alone at the end (the rest follow in path order).
 * A name missing here only costs time, never a test.
 */
const SLOW_FIRST = [
  'batch/resume',
  'core/process',
  'redis/sentinel',
  'hardening/email-outage',
  'reconcile/sweep-script',
  'reconcile/scheduler',
  'ops/production-build',
  'pages/verify-email-browser',
  'pages/tracking-browser',
  'redis/cluster-failover',
  'reconcile/terminal-progress',
  'outbox/outbox-redis-down',
  'ops/kill-worker',
  'core/dotenv',
];

/** The bundled test files: all of them, or those named (`test/x/y.test.ts`, or a folder such as `test/payments`). */
function testFiles(requested) {
  const bundled = (file) => path.join(TEST_BUNDLE_DIR, file);
  const all = readdirSync(path.join(ROOT, TEST_BUNDLE_DIR), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.test.js'))
    .map(bundled)
    .sort();
  const asBundled = (arg) => bundled(path.relative('test', arg).replace(/\.ts$/, '.js'));
  const chosen = requested.length
    ? all.filter((file) => requested.some((arg) => file === asBundled(arg) || file.startsWith(asBundled(arg) + path.sep)))
    : all;
  const rank = (file) => {
    const index = SLOW_FIRST.findIndex((name) => file.endsWith(`${path.sep}${name}.test.js`));
    return index === -1 ? SLOW_FIRST.length : index;
  };
  return chosen.sort((a, b) => rank(a) - rank(b));
}

const requested = process.argv.slice(2);
// The test files run from .test-bundle/; the errands and scripts they spawn from .test-main/.
await Promise.all([bundleTests(ROOT), bundleMainForTests(ROOT)]);
const files = testFiles(requested);
if (requested.length && !files.length) {
  process.stderr.write(`no test file matches ${requested.join(' ')}\n`);
  process.exit(1);
}
// Children inherit this environment: tap reads its per-test timeout from TAP_TIMEOUT (seconds) when no tap runner
// set it, and stack traces point into the TypeScript sources.
process.env.TAP_TIMEOUT = String(FILE_TIMEOUT_S);
process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --enable-source-maps`.trim();
const started = Date.now();
// run() rather than `node --test`: the CLI sorts the files by name, run() starts them in the order given.
let failed = false;
const stream = run({ files: files.map((file) => path.join(ROOT, file)), concurrency: CONCURRENCY, timeout: FILE_TIMEOUT_S * 1000 });
stream.on('test:fail', () => (failed = true));
// Per file, the summed time of its top-level tests (its process start-up not included): the slowest are printed at
// the end, the files to look at first when the suite grows slow.
const secondsPerFile = new Map();
const addTime = (event) => {
  if (event.nesting !== 0 || !event.file) return;
  secondsPerFile.set(event.file, (secondsPerFile.get(event.file) ?? 0) + (event.details?.duration_ms ?? 0) / 1000);
};
stream.on('test:pass', addTime);
stream.on('test:fail', addTime);
await pipeline(stream, new spec(), process.stdout, { end: false });
const byTime = [...secondsPerFile].sort((a, b) => b[1] - a[1]);
const slowest = byTime.slice(0, 12);
if (process.env.TEST_TIMINGS)
  writeFileSync(process.env.TEST_TIMINGS, byTime.map(([file, s]) => `${s.toFixed(1)} ${path.relative(ROOT, file)}\n`).join(''));
process.stdout.write(`\n# slowest files: ${slowest.map(([file, s]) => `${path.relative(ROOT, file)} ${s.toFixed(1)} s`).join(', ')}`);
process.stdout.write(`\n# ${files.length} test files: ${failed ? 'FAILED' : 'ok'} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exitCode = failed ? 1 : 0;
