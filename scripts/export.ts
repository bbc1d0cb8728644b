import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import { ConfigError, loadConfig } from '../src/config.js';
import { createDb } from '../src/db/pool.js';
import { prepareDatabase } from '../src/db/migrations.js';
import type { Db } from '../src/db/schema.js';
import { EXPORT_HELP, EXPORT_USAGE, ExportUsageError, parseExportArgs, type ExportArgs } from '../src/batch/export-cli.js';
import { chunkRowsFor } from '../src/batch/jobs.js';
import { writeOrdersExport } from '../src/batch/orders-export.js';

// The orders export in this process, by the same code the `orders-export` job runs, to a file or stdout.
// stderr: a progress bar when it is a terminal, then one JSON summary line {rows, bytes, durationMs}.
// Exit codes: 0 done, 1 fatal (bad configuration, database unreachable, write failed), 2 bad arguments.

let args: ExportArgs;
try {
  args = parseExportArgs(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof ExportUsageError)) throw error;
  process.stderr.write(`${error.message}\n${EXPORT_USAGE}\n`);
  process.exit(2);
}

if (args.help) {
  process.stdout.write(`${EXPORT_HELP}\n`);
} else {
  let db: Db | undefined;
  // A file is written under a temporary name and renamed at the end: a failed export leaves no half file.
  const partial = args.out ? `${args.out}.partial` : undefined;
  let out: Writable = process.stdout;
  try {
    const config = loadConfig();
    await prepareDatabase(config.DATABASE_URL);
    db = createDb(config.DATABASE_URL, 2);
    if (partial) out = createWriteStream(partial);
    const bar = process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { stream: process.stderr, format: 'orders {bar} {percentage}% | {value}/{total} | eta {eta_formatted}', hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    const summary = await writeOrdersExport(db, args.params, out, {
      chunkRows: chunkRowsFor('export', config.BATCH_CHUNK_ROWS),
      onStart: (total) => bar?.start(total, 0),
      onProgress: (done) => bar?.update(done),
    });
    bar?.stop();
    if (partial) {
      out.end();
      await finished(out);
      await rename(partial, args.out!);
    }
    process.stderr.write(`${JSON.stringify(summary)}\n`);
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `export failed: ${(error as Error).message || String(error)}`;
    process.stderr.write(`${message}\n`);
    if (partial) {
      out.destroy();
      await rm(partial, { force: true });
    }
    process.exitCode = 1;
  } finally {
    await db?.destroy();
  }
}
