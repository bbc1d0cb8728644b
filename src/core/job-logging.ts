import type { Job, Queue, QueueEvents, Worker } from 'bullmq';
import { logsInfo, type Logger } from './logger.js';

const ADDED_NAMES_KEPT = 10_000;

type JobEvent = 'added' | 'waiting' | 'active' | 'progress' | 'completed' | 'failed' | 'stalled' | 'error';

function jobFields(queue: string, event: JobEvent, job: Pick<Job, 'id' | 'name' | 'attemptsStarted'> | undefined, jobId?: string) {
  return { queue, event, jobId: job?.id ?? jobId ?? null, jobName: job?.name ?? null, attempt: job?.attemptsStarted ?? 0 };
}

/** One line per lifecycle event the worker sees, with queue, jobId, jobName, attempt and event. */
export function logWorkerEvents(worker: Worker, queue: Queue, log: Logger): void {
  const name = worker.name;
  worker.on('active', (job) => log.info({ ...jobFields(name, 'active', job), source: 'worker' }, 'job active'));
  worker.on('progress', (job, progress) => log.info({ ...jobFields(name, 'progress', job), source: 'worker', progress }, 'job progress'));
  worker.on('completed', (job) =>
    log.info(
      {
        ...jobFields(name, 'completed', job),
        source: 'worker',
        durationMs: job.finishedOn && job.processedOn ? job.finishedOn - job.processedOn : null,
      },
      'job completed',
    ),
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
  // 'added' carries the job's name and comes just before its first 'waiting': remembering it spares that
  // line a Redis round trip (getJob) per job. Bounded: a job that is never 'waiting' (delayed) ages out.
  const addedNames = new Map<string, string>();
  const logWaiting = (jobId: string) => {
    const jobName = addedNames.get(jobId);
    if (jobName !== undefined) {
      addedNames.delete(jobId);
      return log.info({ queue: name, event: 'waiting', jobId, jobName, attempt: 0, source: 'queue-events' }, 'job waiting');
    }
    void queue.getJob(jobId).then(
      (job) => log.info({ ...jobFields(name, 'waiting', job, jobId), source: 'queue-events' }, 'job waiting'),
      () => log.info({ ...jobFields(name, 'waiting', undefined, jobId), source: 'queue-events' }, 'job waiting'),
    );
  };
  events.on('added', ({ jobId, name: jobName }) => {
    if (!logsInfo(log)) return;
    addedNames.set(jobId, jobName);
    if (addedNames.size > ADDED_NAMES_KEPT) addedNames.delete(addedNames.keys().next().value!);
    log.info({ queue: name, event: 'added', jobId, jobName, attempt: 0, source: 'queue-events' }, 'job added');
  });
  events.on('waiting', ({ jobId }) => {
    if (logsInfo(log)) logWaiting(jobId);
  });
  events.on('error', (err) =>
    log.error({ queue: name, event: 'error', jobId: null, jobName: null, attempt: 0, source: 'queue-events', err }, 'queue events error'),
  );
}
