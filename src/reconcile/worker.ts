import type { Config } from '../config.js';
import type { Processors } from '../core/job-registry.js';
import type { Metrics } from '../ops/metrics.js';
import { PAYMENTS_RECONCILE_QUEUE, paymentsReconcileQueue } from './jobs.js';
import { runPaymentsSweep, type SweepDeps } from './sweep.js';

export interface PaymentsReconcileWorkerDeps extends SweepDeps {
  config: SweepDeps['config'] & Pick<Config, 'NODE_ENV' | 'PAYMENT_PROVIDER_URL'>;
  metrics: SweepDeps['metrics'] & Pick<Metrics, 'sweepsWithoutProvider'>;
}

/** The `payments-sweep` job: run the sweep, report progress; the summary is the job's return value. */
export function paymentsReconcileProcessors(deps: PaymentsReconcileWorkerDeps): Processors<typeof paymentsReconcileQueue> {
  return {
    'payments-sweep': async ({ windowHours, limit }, job) => {
      const log = deps.log.child({ queue: PAYMENTS_RECONCILE_QUEUE, jobId: job.id, jobName: job.name, attempt: job.attemptsStarted });
      // The simulator knows no real payment: in production such a sweep settles nothing, silently, every hour.
      if (deps.config.NODE_ENV === 'production' && !deps.config.PAYMENT_PROVIDER_URL) {
        deps.metrics.sweepsWithoutProvider.inc();
        log.error('payments sweep without PAYMENT_PROVIDER_URL in production: asking the built-in simulator, which settles no real order');
      }
      return runPaymentsSweep({ windowHours, limit }, { ...deps, log }, { onProgress: (progress) => job.updateProgress(progress) });
    },
  };
}
