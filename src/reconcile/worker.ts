import type { Processors } from '../core/job-registry.js';
import { PAYMENTS_RECONCILE_QUEUE, paymentsReconcileQueue } from './jobs.js';
import { runPaymentsSweep, type SweepDeps } from './sweep.js';

/** The `payments-sweep` job: run the sweep, report progress; the summary is the job's return value. */
export function paymentsReconcileProcessors(deps: SweepDeps): Processors<typeof paymentsReconcileQueue> {
  return {
    'payments-sweep': async ({ windowHours, limit }, job) => {
      const log = deps.log.child({ queue: PAYMENTS_RECONCILE_QUEUE, jobId: job.id, jobName: job.name, attempt: job.attemptsStarted });
      return runPaymentsSweep({ windowHours, limit }, { ...deps, log }, { onProgress: (progress) => job.updateProgress(progress) });
    },
  };
}
