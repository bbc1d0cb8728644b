import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from '../src/config.js';
import { createDeps, type Deps } from '../src/deps.js';
import { prepareDatabase } from '../src/core/db.js';
import { parseDuration } from '../src/reconcile/duration.js';
import { enqueuePaymentsSweep, MAX_SWEEP_LIMIT, MAX_WINDOW_HOURS } from '../src/reconcile/jobs.js';
import { runPaymentsSweep } from '../src/reconcile/sweep.js';

// One payments sweep now, in this process (or, with --enqueue, as a job for the workers).
// stdout: exactly one JSON line (the summary, or the queued job id); logs go to stderr.
// Exit codes: 0 done, 1 fatal (bad configuration, database or Redis unreachable), 2 bad arguments.
const usage = `usage: npm run sweep -- [--window <duration: 30m, 24h, 2d>] [--limit <1-${MAX_SWEEP_LIMIT}>] [--dry-run] [--enqueue] [--help]`;
const help = `${usage}

  --window   how far back to look for pending orders (default PAYMENTS_RECONCILE_WINDOW_HOURS)
  --limit    at most this many orders, oldest first (default PAYMENTS_RECONCILE_LIMIT)
  --dry-run  ask the provider and count what would change, change nothing
  --enqueue  add one payments-sweep job to the queue instead of running here; prints its id
exit codes: 0 done, 1 fatal (e.g. database unreachable), 2 bad arguments`;

const ENQUEUE_TIMEOUT_MS = 10_000;

class UsageError extends Error {}

interface Args {
  windowHours?: number;
  limit?: number;
  dryRun: boolean;
  enqueue: boolean;
  help: boolean;
}

function parseCommandLine(argv: string[]): Args {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        window: { type: 'string' },
        limit: { type: 'string' },
        'dry-run': { type: 'boolean' },
        enqueue: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values } = parsed;
  const args: Args = { dryRun: values['dry-run'] ?? false, enqueue: values.enqueue ?? false, help: values.help ?? false };
  if (values.window !== undefined) {
    const ms = parseDuration(values.window);
    if (ms === undefined) throw new UsageError(`--window must be a duration such as 30m, 24h or 2d (got ${JSON.stringify(values.window)})`);
    const hours = ms / 3_600_000;
    if (hours > MAX_WINDOW_HOURS) throw new UsageError(`--window may be at most ${MAX_WINDOW_HOURS / 24}d`);
    args.windowHours = hours;
  }
  if (values.limit !== undefined) {
    if (!/^\d+$/.test(values.limit) || Number(values.limit) < 1 || Number(values.limit) > MAX_SWEEP_LIMIT) {
      throw new UsageError(`--limit must be an integer from 1 to ${MAX_SWEEP_LIMIT} (got ${JSON.stringify(values.limit)})`);
    }
    args.limit = Number(values.limit);
  }
  if (args.dryRun && args.enqueue) throw new UsageError('--dry-run runs in this process; it cannot be combined with --enqueue');
  return args;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main(args: Args, config: Config, deps: Deps): Promise<Record<string, unknown>> {
  const windowHours = args.windowHours ?? config.PAYMENTS_RECONCILE_WINDOW_HOURS;
  const limit = args.limit ?? config.PAYMENTS_RECONCILE_LIMIT;
  if (args.enqueue) {
    const jobId = await withTimeout(enqueuePaymentsSweep(deps.queues, { windowHours, limit }), ENQUEUE_TIMEOUT_MS, 'Redis');
    deps.log.info({ jobId, windowHours, limit }, 'payments sweep queued');
    return { enqueued: true, jobId, windowHours, limit };
  }
  const summary = await runPaymentsSweep({ windowHours, limit, dryRun: args.dryRun }, deps);
  return { ...summary };
}

let args: Args;
try {
  args = parseCommandLine(process.argv.slice(2));
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
  try {
    config = loadConfig();
    if (!args.enqueue) await prepareDatabase(config.DATABASE_URL);
    deps = createDeps(config, { logDestination: pino.destination({ fd: 2, sync: true }) });
    const line = await main(args, config, deps);
    process.stdout.write(`${JSON.stringify(line)}\n`);
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `sweep failed: ${(error as Error).message || String(error)}`;
    if (deps) deps.log.fatal({ err: error }, 'payments sweep failed');
    process.stderr.write(`${message}\n`);
    process.exitCode = 1;
  } finally {
    await deps?.close();
  }
}
