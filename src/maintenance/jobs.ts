import { Type, type Static } from 'typebox';
import { defineQueue } from '../core/job-registry.js';

export const MAINTENANCE_QUEUE = 'maintenance';
export const RETENTION_JOB = 'retention';
export const MAINTENANCE_SCHEDULER_ID = 'maintenance';

export const RetentionPayloadSchema = Type.Object(
  {
    retentionDays: Type.Integer({ minimum: 1, maximum: 36500 }),
    batchSize: Type.Integer({ minimum: 1, maximum: 100000 }),
  },
  { additionalProperties: false },
);
export type RetentionPayload = Static<typeof RetentionPayloadSchema>;

export const maintenanceQueue = defineQueue({
  name: MAINTENANCE_QUEUE,
  jobs: { [RETENTION_JOB]: { payload: RetentionPayloadSchema } },
  // One at a time: two retention runs would only race for the same rows.
  worker: () => ({ concurrency: 1 }),
});
