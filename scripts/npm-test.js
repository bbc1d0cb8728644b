// `npm test`: esbuild bundles each test file into .test-bundle/, and errand's entry point and the scripts into
// .test-main/ for the tests that spawn them (a few seconds in all), then Node's built-in test runner (node:test's
// run()) runs the bundled test files, most of them several to a node process (see groups()), four processes at
// once, and reads the TAP that the tap library prints. No TypeScript loader (tsx: ~2.3 s of CPU per file), no tap
// runner hooks (its process-info loader hooks every module a file loads: ~1.5 s) and no loading of ~900 separate
// modules (~1.2 s) in a test process: together they were about two thirds of the suite's CPU.
// `npm test` starts this with --single-threaded-gc, and the test processes inherit it (run() passes on this
// process's execArgv): GC helper threads only wait for a core when four processes share two (~5 % less CPU without
// them). The groups also turn V8's optimizing compiler off (--no-opt, set as they start): it spent more CPU compiling
// than its code saved in processes that live for seconds (the suite with --no-opt everywhere: 216 s of CPU with it,
// 185 s without, on 2 cores). Not in the files that run alone: among them are the ones that bound a request's latency
// (outbox-redis-down, publish-deadline: < 1 s while Redis is away), and under load unoptimized code doubled those
// latencies (four copies beside four CPU burners: 4 of 4 failed with --no-opt, 0 of 4 without). Errands and scripts
// that tests spawn run as in production (--no-opt measured no faster there: 65-72 s of CPU for the 13 files that
// spawn most, either way).
// `npm run test:coverage` runs the .test-build/ files under tap's runner.
// The static checks (tsc, eslint, prettier) are `npm run check`, which .ci/run runs before this.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
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
 * Files that keep a process of their own, started first in this order, so that no long file begins last and runs
 * alone at the end; the groups follow (see groups() below). These are the longest (a group runs its files one after
 * another: a 20-45 s file would hold the rest of its group back), the browsers', and the one that checks what the
 * process holds globally (OpenTelemetry's registrations). A name missing here only costs time, never a test.
 */
const RUNS_ALONE = [
  'batch/resume',
  'core/process',
  'redis/sentinel',
  'pages/verify-email-browser',
  'pages/tracking-browser',
  'redis/cluster-failover',
  'reconcile/terminal-progress',
  'outbox/outbox-redis-down',
  'pages/admin-board-browser',
  'ops/tracing',
  'outbox/publish-deadline',
];

/** Files per shared process: each saves ~1.3 s of CPU (Node's start, the bundle's load); 8 files take ~20 s. */
const GROUP_SIZE = Number(process.env.TEST_GROUP_SIZE ?? 8);

/** The file's place in RUNS_ALONE, or -1 when it runs in a group. */
function aloneIndex(file) {
  return RUNS_ALONE.findIndex((name) => file.endsWith(`${path.sep}${name}.test.js`));
}

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
    const index = aloneIndex(file);
    return index === -1 ? RUNS_ALONE.length : index;
  };
  return chosen.sort((a, b) => rank(a) - rank(b));
}

/**
 * The processes to run: a file of RUNS_ALONE as it is, the others about GROUP_SIZE at a time, each group a
 * generated module under .test-bundle/groups/ that runs its files one after another, each file in a tap subtest named
 * after it (test/support/tap-per-file.ts makes the file's `t` that subtest). Its teardowns run before the next file.
 */
function groups(files) {
  const alone = (file) => aloneIndex(file) !== -1;
  const shared = files.filter((file) => !alone(file)).sort();
  const dir = path.join(ROOT, TEST_BUNDLE_DIR, 'groups');
  mkdirSync(dir, { recursive: true });
  const processes = files.filter(alone).map((file) => path.join(ROOT, file));
  // Dealt out like cards rather than cut in runs of neighbours: the files that wait long (a folder's outage tests,
  // the Redis topologies) spread over the groups, which then take about as long as each other, and none ends late.
  const count = Math.ceil(shared.length / GROUP_SIZE);
  for (let index = 0; index < count; index += 1) {
    const members = shared.filter((_, position) => position % count === index).map((file) => [testSourceName(file), path.join(ROOT, file)]);
    const group = path.join(dir, `${String(index + 1).padStart(2, '0')}.group.js`);
    writeFileSync(
      group,
      [
        "import { setFlagsFromString } from 'node:v8';",
        "import t from 'tap';",
        // See the header: no optimizing compiler in a group (set at run time: the group is not started with it).
        "setFlagsFromString('--no-opt');",
        `for (const [name, file] of ${JSON.stringify(members)}) {`,
        '  await t.test(name, async (fileTest) => {',
        "    globalThis[Symbol.for('errand.test.currentFileTest')] = fileTest;",
        '    await import(file);',
        '  });',
        '}',
        "delete globalThis[Symbol.for('errand.test.currentFileTest')];",
        '',
      ].join('\n'),
    );
    processes.push(group);
  }
  return processes;
}

/** .test-bundle/x/y.test.js → test/x/y.test.ts */
function testSourceName(bundled) {
  return path.join('test', path.relative(TEST_BUNDLE_DIR, bundled)).replace(/\.js$/, '.ts');
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
const processes = groups(files);
const stream = run({ files: processes, concurrency: CONCURRENCY, timeout: FILE_TIMEOUT_S * 1000 });
stream.on('test:fail', () => (failed = true));
// Per file, the summed time of its top-level tests (its process start-up not included): the slowest are printed at
// the end, the files to look at first when the suite grows slow.
const secondsPerFile = new Map();
const addTime = (event) => {
  if (event.nesting !== 0 || !event.file) return;
  // In a group, each top-level test is a whole file, named after it.
  const file = event.file.endsWith('.group.js') ? event.name : path.relative(ROOT, event.file);
  secondsPerFile.set(file, (secondsPerFile.get(file) ?? 0) + (event.details?.duration_ms ?? 0) / 1000);
};
stream.on('test:pass', addTime);
stream.on('test:fail', addTime);
await pipeline(stream, new spec(), process.stdout, { end: false });
const byTime = [...secondsPerFile].sort((a, b) => b[1] - a[1]);
const slowest = byTime.slice(0, 12);
if (process.env.TEST_TIMINGS) writeFileSync(process.env.TEST_TIMINGS, byTime.map(([file, s]) => `${s.toFixed(1)} ${file}\n`).join(''));
process.stdout.write(`\n# slowest files: ${slowest.map(([file, s]) => `${file} ${s.toFixed(1)} s`).join(', ')}`);
process.stdout.write(
  `\n# ${files.length} test files in ${processes.length} processes: ${failed ? 'FAILED' : 'ok'} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
);
process.exitCode = failed ? 1 : 0;
