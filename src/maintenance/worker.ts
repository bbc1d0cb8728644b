import type { Config } from '../config.js';
import type { Db } from '../db/schema.js';
import type { Processors } from '../core/job-registry.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { MAINTENANCE_QUEUE, maintenanceQueue } from './jobs.js';
import { runRetention, type RetentionDeleter } from './retention.js';

export interface MaintenanceWorkerDeps {
  db: Db;
  log: Logger;
  metrics: Pick<Metrics, 'retentionDeletedRows'>;
  config: Pick<Config, 'EMAIL_SOFT_BOUNCE_WINDOW_DAYS'>;
}

/** The `retention` job: delete what is older than the retention period; the counts are the job's result. */
export function maintenanceProcessors(
  deps: MaintenanceWorkerDeps,
  deleters?: readonly RetentionDeleter[],
): Processors<typeof maintenanceQueue> {
  return {
    retention: async ({ retentionDays, batchSize }, job, signal) => {
      const log = deps.log.child({ queue: MAINTENANCE_QUEUE, jobId: job.id, jobName: job.name, attempt: job.attemptsStarted });
      const summary = await runRetention(deps.db, log, {
        retentionDays,
        // From this process's config: the receivers that count soft bounces read the same variable.
        softBounceWindowDays: deps.config.EMAIL_SOFT_BOUNCE_WINDOW_DAYS,
        batchSize,
        ...(deleters ? { deleters } : {}),
        ...(signal ? { signal } : {}),
        onProgress: (deleted) => job.updateProgress(deleted),
      });
      for (const [table, count] of Object.entries(summary.deleted)) deps.metrics.retentionDeletedRows.inc({ table }, count);
      return summary;
    },
  };
}
