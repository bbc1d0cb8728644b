import { Type, type Static } from 'typebox';
import { OrderStatusSchema } from '../db/schema.js';
import { defineQueue } from '../core/job-registry.js';

export const BATCH_QUEUE = 'batch';
export const ORDERS_EXPORT_JOB = 'orders-export';
export const USERS_IMPORT_JOB = 'users-import';
export const TRACKING_LINKS_BACKFILL_JOB = 'tracking-links-backfill';

/** The failedReason of a cancelled batch job (and the abort reason sent to the worker running it). */
export const CANCELLED_REASON = 'cancelled';

/**
 * How many times a batch job may lose its lock (a killed worker, or a graceful
 * stop whose grace period it outlived) before BullMQ fails it. Each loss costs
 * nothing but a restart from the last checkpoint, so a handful of deploys in a
 * row must not fail an hour-long export; a job that kills its worker every
 * time still ends after this many.
 */
export const BATCH_MAX_STALLED_COUNT = 10;

/**
 * Rows per chunk when BATCH_CHUNK_ROWS is unset. Imports and backfills handle
 * rows in this process (a backfill even one query per order), so they keep
 * chunks small enough to report progress well within a second. An export
 * chunk is built and stored by PostgreSQL in one statement, ~0.1 s for 10,000
 * rows on a loaded 2-core machine: a bigger chunk amortises the statement,
 * commit and progress report (115k rows/s against 35k at 1,000 rows) and
 * still reports progress far more often than once a second.
 */
export const DEFAULT_CHUNK_ROWS = 1000;
export const DEFAULT_EXPORT_CHUNK_ROWS = 10000;

/** Rows per chunk of each batch job kind: BATCH_CHUNK_ROWS when set (all kinds), else the kind's default. */
export function chunkRowsFor(kind: 'export' | 'other', configured: number | undefined): number {
  return configured ?? (kind === 'export' ? DEFAULT_EXPORT_CHUNK_ROWS : DEFAULT_CHUNK_ROWS);
}

export const EXPORT_FORMATS = ['csv', 'ndjson'] as const;

export const OrdersExportPayloadSchema = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time' })),
    to: Type.Optional(Type.String({ format: 'date-time' })),
    status: Type.Optional(OrderStatusSchema),
    format: Type.Union([Type.Literal('csv'), Type.Literal('ndjson')]),
  },
  { additionalProperties: false },
);
export type OrdersExportPayload = Static<typeof OrdersExportPayloadSchema>;

// The upload itself is in PostgreSQL, under the job's id: the payload says only what to do with it.
export const UsersImportPayloadSchema = Type.Object({ sendVerification: Type.Boolean() }, { additionalProperties: false });
export type UsersImportPayload = Static<typeof UsersImportPayloadSchema>;

export const TrackingLinksBackfillPayloadSchema = Type.Object(
  { since: Type.String({ format: 'date-time' }) },
  { additionalProperties: false },
);
export type TrackingLinksBackfillPayload = Static<typeof TrackingLinksBackfillPayloadSchema>;

export const batchQueue = defineQueue({
  name: BATCH_QUEUE,
  jobs: {
    [ORDERS_EXPORT_JOB]: { payload: OrdersExportPayloadSchema },
    [USERS_IMPORT_JOB]: { payload: UsersImportPayloadSchema },
    [TRACKING_LINKS_BACKFILL_JOB]: { payload: TrackingLinksBackfillPayloadSchema },
  },
  worker: (config) => ({
    concurrency: config.BATCH_CONCURRENCY,
    lockDuration: config.BATCH_LOCK_DURATION_MS,
    stalledInterval: config.BATCH_STALLED_INTERVAL_MS,
    maxStalledCount: BATCH_MAX_STALLED_COUNT,
  }),
});

export type BatchJobName = keyof (typeof batchQueue)['jobs'];
