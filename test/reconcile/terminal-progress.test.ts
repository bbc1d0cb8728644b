import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb } from '../../src/db/pool.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { REPO_ROOT, childEnv, freshDatabaseUrl, runScript, scriptArgs, testEnv } from '../support/helpers.js';
import { insertOrders, startSimulator } from '../support/reconcile.js';

interface TerminalRun {
  code: number | null;
  /** What the terminal showed: the script's stderr (stdout went to a file). */
  terminal: string;
  stdout: string;
}

const outDir = mkdtempSync(join(tmpdir(), 'errand-terminal-'));
t.teardown(() => rmSync(outDir, { recursive: true, force: true }));
let runs = 0;

/**
 * Runs a script with stderr on a real pseudo-terminal (util-linux `script`)
 * and stdout redirected to a file, as `npm run sweep > summary.json` would in a shell.
 */
function runOnTerminal(script: string, args: string[], env: Record<string, string | undefined>): Promise<TerminalRun> {
  const stdoutFile = join(outDir, `stdout-${++runs}.txt`);
  const command = [process.execPath, ...scriptArgs(script), ...args].map((word) => `'${word}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qefc', `${command} > '${stdoutFile}'`, '/dev/null'], {
      cwd: REPO_ROOT,
      env: childEnv({ ...env, TERM: 'xterm' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let terminal = '';
    child.stdout.on('data', (chunk: Buffer) => (terminal += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (terminal += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, terminal, stdout: readFileSync(stdoutFile, 'utf8') }));
  });
}

const { sim, url } = await startSimulator(t);
// A database that does not exist yet: migrate shows it being created and every migration applied.
const env = testEnv(t, { DATABASE_URL: freshDatabaseUrl(t, { create: false }), PAYMENT_PROVIDER_URL: url, LOG_LEVEL: 'info' });

t.test('npm run migrate on a terminal shows each step; stdout keeps its one JSON line', async (t) => {
  const first = await runOnTerminal('migrate.ts', [], env);
  t.equal(first.code, 0, first.terminal);
  const applied = (JSON.parse(first.stdout) as { applied: string[] }).applied;
  t.ok(applied.length >= 2, 'migrations applied');
  t.equal(first.stdout.trim().split('\n').length, 1, 'one line on stdout');
  const database = new URL(env.DATABASE_URL!).pathname.slice(1);
  t.match(first.terminal, `database ${database}: created`);
  t.match(first.terminal, `${applied.length} migrations to apply (0 applied before)`);
  t.match(first.terminal, `[1/${applied.length}] ${applied[0]} applied in `);
  t.match(first.terminal, `[${applied.length}/${applied.length}] ${applied.at(-1)} applied in `);

  const again = await runOnTerminal('migrate.ts', [], env);
  t.equal(again.code, 0, again.terminal);
  t.same(JSON.parse(again.stdout), { applied: [] });
  t.match(again.terminal, `database ${database}: exists`);
  t.match(again.terminal, `up to date (${applied.length} migrations applied before)`);

  const piped = await runScript('migrate.ts', [], env);
  t.equal(piped.code, 0);
  t.equal(piped.stderr, '', 'not a terminal: nothing on stderr');
  t.same(JSON.parse(piped.stdout), { applied: [] });
});

t.test('npm run sweep on a terminal: counts and a bar, log lines intact above it; stdout unchanged', async (t) => {
  const db = createDb(env.DATABASE_URL!, 2);
  t.teardown(() => db.destroy());
  await migrateToLatest(db);
  const orders = await insertOrders(
    db,
    Array.from({ length: 60 }, (_, i) => ({ ageMinutes: 5 + i })),
  );
  for (const order of orders.slice(0, 10))
    sim.setPayment(order.providerRef, { status: 'succeeded', amount: order.amount, currency: order.currency });

  const run = await runOnTerminal('sweep.ts', ['--window', '24h', '--dry-run'], env);
  t.equal(run.code, 0, run.terminal);
  t.equal(run.stdout.trim().split('\n').length, 1, 'one line on stdout');
  t.match(JSON.parse(run.stdout), { checked: 60, paid: 10, unchanged: 50, errors: 0 });
  t.match(run.terminal, 'payments sweep: 60 pending orders to check');
  t.match(run.terminal, /checking \[[█░]+\] \d+\/60 \| paid \d+/, 'a bar with counts');
  t.match(run.terminal, /checked 60 of 60: paid 10, failed 0, expired 0, unchanged 50, errors 0 \(\d+\.\d s\)/, 'final counts');
  // The bar is redrawn with cursor movements, so lines are told apart by their content, not by newlines.
  // eslint-disable-next-line no-control-regex -- terminal escape sequences start with ESC
  const shown = run.terminal.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '\n');
  const logLines = [...shown.matchAll(/\{"level":.*\}/g)].map((m) => m[0]);
  t.ok(
    logLines.some((line) => line.includes('"msg":"payments sweep finished"')),
    'log lines still reach the terminal',
  );
  for (const line of logLines) t.doesNotThrow(() => JSON.parse(line), 'a log line is whole, not cut by the bar');

  const piped = await runScript('sweep.ts', ['--window', '24h', '--dry-run'], env);
  t.equal(piped.code, 0, piped.stderr);
  t.match(JSON.parse(piped.stdout), { checked: 60, paid: 10 });
  t.notMatch(piped.stderr, /pending orders to check|checking \[|checked 60 of 60/, 'not a terminal: no progress');
  t.notMatch(piped.stderr, '\u001b[', 'and no escape codes');
});

t.test('a short sweep on a terminal shows counts without a bar', async (t) => {
  const run = await runOnTerminal('sweep.ts', ['--window', '24h', '--limit', '5', '--dry-run'], env);
  t.equal(run.code, 0, run.terminal);
  t.match(JSON.parse(run.stdout), { checked: 5 });
  t.match(run.terminal, 'payments sweep: 5 pending orders to check');
  t.notMatch(run.terminal, 'checking [');
  t.match(run.terminal, /checked 5 of 5: /);
});
