import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Value } from 'typebox/value';
import type { Config } from '../config.js';
import { COMPLETED_JOBS_KEPT, PAYMENTS_RECONCILE_QUEUE } from '../core/queues.js';
import type { RedisClient } from '../core/redis.js';
import { PAYMENTS_SWEEP_JOB, PaymentsSweepPayloadSchema } from './jobs.js';
import { runPaymentsSweep, type SweepDeps, type SweepSummary } from './sweep.js';

export interface PaymentsSweepWorkerDeps extends SweepDeps {
  config: Config;
  workerRedis: RedisClient;
}

/** The `payments-sweep` job: validate the payload, run the sweep, report progress; the summary is the job's return value. */
export function processPaymentsSweepJob(deps: PaymentsSweepWorkerDeps) {
  return async (job: Job): Promise<SweepSummary> => {
    if (job.name !== PAYMENTS_SWEEP_JOB) throw new UnrecoverableError(`unknown ${PAYMENTS_RECONCILE_QUEUE} job name ${job.name}`);
    if (!Value.Check(PaymentsSweepPayloadSchema, job.data)) {
      const [first] = Value.Errors(PaymentsSweepPayloadSchema, job.data);
      throw new UnrecoverableError(`invalid ${PAYMENTS_SWEEP_JOB} payload: ${first?.instancePath || 'data'} ${first?.message ?? 'is invalid'}`);
    }
    const { windowHours, limit } = job.data;
    const log = deps.log.child({ queue: PAYMENTS_RECONCILE_QUEUE, jobId: job.id, jobName: job.name, attempt: job.attemptsStarted });
    return runPaymentsSweep({ windowHours, limit }, { ...deps, log }, { onProgress: (progress) => job.updateProgress(progress) });
  };
}

/** Concurrency 1: two sweeps at once would only ask the provider twice about the same orders. */
export function createPaymentsSweepWorker(deps: PaymentsSweepWorkerDeps): Worker {
  const { config } = deps;
  return new Worker(PAYMENTS_RECONCILE_QUEUE, processPaymentsSweepJob(deps), {
    connection: deps.workerRedis,
    prefix: config.QUEUE_PREFIX,
    concurrency: 1,
    removeOnComplete: COMPLETED_JOBS_KEPT,
    lockDuration: config.WORKER_LOCK_DURATION_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
  });
}
