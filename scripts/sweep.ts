import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from '../src/config.js';
import { createDeps, type Deps } from '../src/deps.js';
import { prepareDatabase } from '../src/db/migrations.js';
import { unlessAborted } from '../src/core/abort.js';
import { enqueuePaymentsSweep } from '../src/reconcile/jobs.js';
import { runPaymentsSweep } from '../src/reconcile/sweep.js';
import { help, parseSweepArgs, usage, UsageError, type SweepArgs } from './sweep-args.js';
import { createSweepTerminal, type SweepTerminal } from './terminal-progress.js';

// One payments sweep now, in this process (or, with --enqueue, as a job for the workers).
// stdout: exactly one JSON line (the summary, or the queued job id); logs go to stderr.
// Exit codes: 0 done, 1 fatal (bad configuration, database or Redis unreachable), 2 bad arguments.
const ENQUEUE_TIMEOUT_MS = 10_000;

async function main(args: SweepArgs, config: Config, deps: Deps, terminal: SweepTerminal | undefined): Promise<Record<string, unknown>> {
  const windowHours = args.windowHours ?? config.PAYMENTS_RECONCILE_WINDOW_HOURS;
  const limit = args.limit ?? config.PAYMENTS_RECONCILE_LIMIT;
  if (args.enqueue) {
    const jobId = await unlessAborted(
      enqueuePaymentsSweep(deps.queues, { windowHours, limit }),
      AbortSignal.timeout(ENQUEUE_TIMEOUT_MS),
      `Redis did not answer within ${ENQUEUE_TIMEOUT_MS} ms`,
    );
    deps.log.info({ jobId, windowHours, limit }, 'payments sweep queued');
    return { enqueued: true, jobId, windowHours, limit };
  }
  const summary = await runPaymentsSweep({ windowHours, limit, dryRun: args.dryRun }, deps, {
    onProgress: terminal && ((progress) => terminal.onProgress(progress)),
  });
  terminal?.finish();
  return { ...summary };
}

let args: SweepArgs;
try {
  args = parseSweepArgs(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  process.stderr.write(`${error.message}\n${usage}\n`);
  process.exit(2);
}

if (args.help) {
  process.stdout.write(`${help}\n`);
} else {
  let config: Config | undefined;
  let deps: Deps | undefined;
  let terminal: SweepTerminal | undefined;
  try {
    config = loadConfig();
    if (!args.enqueue) await prepareDatabase(config.DATABASE_URL);
    // On a terminal (and not --enqueue) a progress display owns stderr and prints the log lines above its bar.
    terminal = args.enqueue ? undefined : createSweepTerminal();
    deps = createDeps(config, { logDestination: terminal?.logDestination ?? pino.destination({ fd: 2, sync: true }) });
    const line = await main(args, config, deps, terminal);
    process.stdout.write(`${JSON.stringify(line)}\n`);
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `sweep failed: ${(error as Error).message || String(error)}`;
    terminal?.finish();
    if (deps) deps.log.fatal({ err: error }, 'payments sweep failed');
    process.stderr.write(`${message}\n`);
    process.exitCode = 1;
  } finally {
    await deps?.close();
  }
}
