import { randomBytes } from 'node:crypto';
import { Type, type Static } from 'typebox';
import { defineQueue } from '../core/job-registry.js';
import type { Queue } from 'bullmq';

export const PAYMENTS_RECONCILE_QUEUE = 'payments-reconcile';
export const PAYMENTS_SWEEP_JOB = 'payments-sweep';
export const PAYMENTS_RECONCILE_SCHEDULER_ID = 'payments-reconcile';

export const MAX_WINDOW_HOURS = 24 * 90;
export const MAX_SWEEP_LIMIT = 100000;

// The bounds of PAYMENTS_RECONCILE_WINDOW_HOURS and PAYMENTS_RECONCILE_LIMIT in config.ts,
// except that a one-off sweep may use part of an hour (`npm run sweep -- --window 30m`).
export const PaymentsSweepPayloadSchema = Type.Object(
  {
    windowHours: Type.Number({ exclusiveMinimum: 0, maximum: MAX_WINDOW_HOURS }),
    limit: Type.Integer({ minimum: 1, maximum: MAX_SWEEP_LIMIT }),
  },
  { additionalProperties: false },
);
export type PaymentsSweepPayload = Static<typeof PaymentsSweepPayloadSchema>;

export const paymentsReconcileQueue = defineQueue({
  name: PAYMENTS_RECONCILE_QUEUE,
  jobs: { [PAYMENTS_SWEEP_JOB]: { payload: PaymentsSweepPayloadSchema } },
  // Concurrency 1: two sweeps at once would only ask the provider twice about the same orders.
  worker: () => ({ concurrency: 1 }),
});

/** A one-off sweep's job id: unique, never all digits and never a colon (BullMQ refuses both for custom ids). */
export function oneOffSweepJobId(now = new Date()): string {
  return `sweep-${now.toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
}

/** Queues one `payments-sweep` now (the script's `--enqueue`, the admin route); returns its job id. */
export async function enqueuePaymentsSweep(
  queues: Readonly<Record<typeof PAYMENTS_RECONCILE_QUEUE, Queue>>,
  payload: PaymentsSweepPayload,
): Promise<string> {
  const job = await queues[PAYMENTS_RECONCILE_QUEUE].add(PAYMENTS_SWEEP_JOB, payload, { jobId: oneOffSweepJobId() });
  return job.id!;
}
