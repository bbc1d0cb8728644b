import type { Job, Queue, QueueEvents, Worker } from 'bullmq';
import { pino } from 'pino';
import type { Logger } from './logger.js';

type JobEvent = 'added' | 'waiting' | 'active' | 'progress' | 'completed' | 'failed' | 'stalled' | 'error';

function jobFields(queue: string, event: JobEvent, job: Pick<Job, 'id' | 'name' | 'attemptsStarted'> | undefined, jobId?: string) {
  return { queue, event, jobId: job?.id ?? jobId ?? null, jobName: job?.name ?? null, attempt: job?.attemptsStarted ?? 0 };
}

/** One line per lifecycle event the worker sees, with queue, jobId, jobName, attempt and event. */
export function logWorkerEvents(worker: Worker, queue: Queue, log: Logger): void {
  const name = worker.name;
  worker.on('active', (job) => log.info({ ...jobFields(name, 'active', job), source: 'worker' }, 'job active'));
  worker.on('progress', (job, progress) =>
    log.info({ ...jobFields(name, 'progress', job), source: 'worker', progress }, 'job progress'),
  );
  worker.on('completed', (job) =>
    log.info({ ...jobFields(name, 'completed', job), source: 'worker', durationMs: job.finishedOn && job.processedOn ? job.finishedOn - job.processedOn : null }, 'job completed'),
  );
  worker.on('failed', (job, err) => {
    const willRetry = job ? job.attemptsMade < (job.opts.attempts ?? 1) && err.name !== 'UnrecoverableError' : false;
    log.warn({ ...jobFields(name, 'failed', job), source: 'worker', reason: err.message, willRetry }, 'job failed');
  });
  worker.on('stalled', (jobId) => {
    void queue.getJob(jobId).then(
      (job) => log.warn({ ...jobFields(name, 'stalled', job, jobId), source: 'worker' }, 'job stalled'),
      () => log.warn({ ...jobFields(name, 'stalled', undefined, jobId), source: 'worker' }, 'job stalled'),
    );
  });
  worker.on('error', (err) => log.error({ ...jobFields(name, 'error', undefined), source: 'worker', err }, 'worker error'));
}

/**
 * What no worker sees: jobs added (by any producer, the api role included) and
 * waiting, from the queue's events stream. Active, progress, completed and
 * failed are logged by the worker that runs the job, so each event is one line.
 */
export function logQueueEvents(events: QueueEvents, queue: Queue, log: Logger): void {
  const name = queue.name;
  const logWithJob = (event: JobEvent, jobId: string) => {
    // Each of these lines costs a Redis round trip (getJob): skip it when info is off.
    if ((pino.levels.values[log.level] ?? Infinity) > pino.levels.values.info!) return;
    void queue.getJob(jobId).then(
      (job) => log.info({ ...jobFields(name, event, job, jobId), source: 'queue-events' }, `job ${event}`),
      () => log.info({ ...jobFields(name, event, undefined, jobId), source: 'queue-events' }, `job ${event}`),
    );
  };
  events.on('added', ({ jobId, name: jobName }) =>
    log.info({ queue: name, event: 'added', jobId, jobName, attempt: 0, source: 'queue-events' }, 'job added'),
  );
  events.on('waiting', ({ jobId }) => logWithJob('waiting', jobId));
  events.on('error', (err) => log.error({ queue: name, event: 'error', jobId: null, jobName: null, attempt: 0, source: 'queue-events', err }, 'queue events error'));
}
