import { parseArgs } from 'node:util';
import { parseDuration } from '../src/reconcile/duration.js';
import { MAX_SWEEP_LIMIT, MAX_WINDOW_HOURS } from '../src/reconcile/jobs.js';

// The command line of scripts/sweep.ts, in a module of its own so tests check it in process.
export const usage = `usage: npm run sweep -- [--window <duration: 30m, 24h, 2d>] [--limit <1-${MAX_SWEEP_LIMIT}>] [--dry-run] [--enqueue] [--help]`;
export const help = `${usage}

  --window   how far back to look for pending orders (default PAYMENTS_RECONCILE_WINDOW_HOURS)
  --limit    at most this many orders, oldest first (default PAYMENTS_RECONCILE_LIMIT)
  --dry-run  ask the provider and count what would change, change nothing
  --enqueue  add one payments-sweep job to the queue instead of running here; prints its id
exit codes: 0 done, 1 fatal (e.g. database unreachable), 2 bad arguments`;

/** A bad command line: the script prints the message and the usage line, and exits 2. */
export class UsageError extends Error {}

export interface SweepArgs {
  windowHours?: number;
  limit?: number;
  dryRun: boolean;
  enqueue: boolean;
  help: boolean;
}

export function parseSweepArgs(argv: string[]): SweepArgs {
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
  const args: SweepArgs = { dryRun: values['dry-run'] ?? false, enqueue: values.enqueue ?? false, help: values.help ?? false };
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
