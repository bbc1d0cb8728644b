import { parseArgs } from 'node:util';
import { Value } from 'typebox/value';
import { ORDER_STATUSES } from '../db/schema.js';
import { EXPORT_FORMATS, OrdersExportPayloadSchema, type OrdersExportPayload } from './jobs.js';
import { firstValidationError } from '../core/schemas.js';

// The argument parser of `npm run export` (scripts/export.ts), kept here so it can be tested in process.

export const EXPORT_USAGE =
  'usage: npm run export -- [--from ISO] [--to ISO] [--status pending|paid|failed|expired] [--format csv|ndjson] [--out FILE] [--help]';
export const EXPORT_HELP = `${EXPORT_USAGE}

  --from    orders created at or after this instant (ISO 8601 date-time, e.g. 2026-01-01T00:00:00Z)
  --to      orders created before this instant
  --status  only orders in this status
  --format  csv (default; RFC 4180, header row) or ndjson
  --out     write to this file (written next to it and renamed when complete); default stdout
A progress bar goes to stderr when it is a terminal; one JSON summary line {rows, bytes, durationMs} goes to stderr at the end.
exit codes: 0 done, 1 fatal (e.g. database unreachable), 2 bad arguments`;

export class ExportUsageError extends Error {
  override name = 'ExportUsageError';
}

export interface ExportArgs {
  help: boolean;
  out?: string;
  params: OrdersExportPayload;
}

/** Parses and checks `npm run export` arguments against the job's own payload schema; throws ExportUsageError. */
export function parseExportArgs(argv: string[]): ExportArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        status: { type: 'string' },
        format: { type: 'string' },
        out: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new ExportUsageError((error as Error).message);
  }
  const params = {
    format: values.format ?? 'csv',
    ...(values.from !== undefined ? { from: values.from } : {}),
    ...(values.to !== undefined ? { to: values.to } : {}),
    ...(values.status !== undefined ? { status: values.status } : {}),
  };
  // Named here: the schema's own message for a union of literals ("must be equal to constant") says nothing useful.
  for (const [option, value, allowed] of [
    ['--status', values.status, ORDER_STATUSES],
    ['--format', values.format, EXPORT_FORMATS],
  ] as const) {
    if (value !== undefined && !(allowed as readonly string[]).includes(value))
      throw new ExportUsageError(`${option} must be one of ${allowed.join(', ')}`);
  }
  if (!Value.Check(OrdersExportPayloadSchema, params)) {
    const path = (instancePath: string) => instancePath.replace(/^\//, '--');
    throw new ExportUsageError(firstValidationError(Value.Errors(OrdersExportPayloadSchema, params), { root: 'arguments', path }));
  }
  if (params.from && params.to && Date.parse(params.from) >= Date.parse(params.to))
    throw new ExportUsageError('--from must be before --to');
  if (values.out === '') throw new ExportUsageError('--out needs a file name');
  return { help: values.help ?? false, params, ...(values.out !== undefined ? { out: values.out } : {}) };
}
