import { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import type { MigrationEvent } from '../src/db/migrations.js';
import type { SweepProgress } from '../src/reconcile/sweep.js';

// Progress is for a person watching: it goes to stderr, and only when stderr
// is a terminal. stdout keeps its one JSON line; pipes and log collectors see
// nothing new.

/** A sweep this long gets a bar; a shorter one only its counts. */
export const LONG_SWEEP_ORDERS = 50;

export interface SweepTerminal {
  /** pino's destination while the sweep runs: log lines are printed above the bar instead of through it. */
  logDestination: Writable;
  onProgress(progress: SweepProgress): void;
  /** Removes the bar and prints the final counts. */
  finish(): void;
}

function counts(p: SweepProgress): string {
  return `paid ${p.paid}, failed ${p.failed}, expired ${p.expired}, unchanged ${p.unchanged}, errors ${p.errors}`;
}

/** Undefined when `stream` is not a terminal. */
export function createSweepTerminal(stream: NodeJS.WriteStream = process.stderr): SweepTerminal | undefined {
  if (!stream.isTTY) return undefined;
  const started = performance.now();
  let bars: cliProgress.MultiBar | undefined;
  let bar: cliProgress.SingleBar | undefined;
  let last: SweepProgress | undefined;
  const logDestination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (bars) bars.log(chunk.toString());
      else stream.write(chunk);
      callback();
    },
  });
  return {
    logDestination,
    onProgress(progress) {
      if (!last) {
        stream.write(`payments sweep: ${progress.total} pending order${progress.total === 1 ? '' : 's'} to check\n`);
        if (progress.total >= LONG_SWEEP_ORDERS) {
          bars = new cliProgress.MultiBar(
            {
              stream,
              format: 'checking [{bar}] {value}/{total} | {counts} | {duration_formatted}',
              hideCursor: true,
              clearOnComplete: true,
            },
            cliProgress.Presets.shades_classic,
          );
          bar = bars.create(progress.total, 0, { counts: counts(progress) });
        }
      }
      last = progress;
      bar?.update(progress.checked, { counts: counts(progress) });
    },
    finish() {
      // update() prints the log lines still buffered above the bar; stop() alone would drop them.
      bars?.update();
      bars?.stop();
      bars = undefined;
      if (last)
        stream.write(
          `checked ${last.checked} of ${last.total}: ${counts(last)} (${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
        );
    },
  };
}

/** `npm run migrate` on a terminal: the database, what is pending, each migration as it is applied. */
export function createMigrationTerminal(stream: NodeJS.WriteStream = process.stderr): ((event: MigrationEvent) => void) | undefined {
  if (!stream.isTTY) return undefined;
  let total = 0;
  let done = 0;
  return (event) => {
    switch (event.kind) {
      case 'database':
        stream.write(`database ${event.name}: ${event.created ? 'created' : 'exists'}\n`);
        break;
      case 'plan':
        total = event.pending.length;
        stream.write(
          total === 0
            ? `up to date (${event.appliedBefore} migration${event.appliedBefore === 1 ? '' : 's'} applied before)\n`
            : `${total} migration${total === 1 ? '' : 's'} to apply (${event.appliedBefore} applied before)\n`,
        );
        break;
      case 'applied':
        done += 1;
        stream.write(`[${done}/${total}] ${event.name} applied in ${event.durationMs} ms\n`);
        break;
    }
  };
}
