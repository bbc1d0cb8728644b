import type { Config } from '../config.js';
import type { Processors } from '../core/job-registry.js';
import type { OutboxDeps } from '../outbox/producer.js';
import { batchQueue, chunkRowsFor } from './jobs.js';
import { processOrdersExportJob } from './orders-export.js';
import { processTrackingLinksBackfillJob } from './tracking-backfill.js';
import { processUsersImportJob } from './users-import.js';

export interface BatchWorkerDeps extends OutboxDeps {
  config: Config;
}

/** The `batch` queue's processors; each gets BullMQ's AbortSignal (a cancel request) as its third argument. */
export function batchProcessors(deps: BatchWorkerDeps): Processors<typeof batchQueue> {
  const chunking = { chunkRows: chunkRowsFor('other', deps.config.BATCH_CHUNK_ROWS), chunkPauseMs: deps.config.BATCH_CHUNK_PAUSE_MS };
  const exportChunking = { ...chunking, chunkRows: chunkRowsFor('export', deps.config.BATCH_CHUNK_ROWS) };
  return {
    'orders-export': (payload, job, signal) => processOrdersExportJob({ db: deps.db, ...exportChunking }, payload, job, signal),
    'users-import': (payload, job, signal) => processUsersImportJob({ ...deps, ...chunking }, payload, job, signal),
    'tracking-links-backfill': (payload, job, signal) => processTrackingLinksBackfillJob({ ...deps, ...chunking }, payload, job, signal),
  };
}
