import { RateLimitError, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Config } from '../config.js';
import type { Db } from '../core/db.js';
import { maskEmailsIn, type Logger } from '../core/logger.js';
import { COMPLETED_JOBS_KEPT, EMAIL_QUEUE, type Queues } from '../core/queues.js';
import type { RedisClient } from '../core/redis.js';
import { classifySmtpError, type Mailer, type OutgoingEmail } from './mailer.js';

/** Reads fresh rows for a job and returns the email to send, or null when there is nothing to send any more. */
export type EmailComposer = (data: unknown, job: Job) => Promise<OutgoingEmail | null>;
export type EmailComposers = Readonly<Record<string, EmailComposer>>;

export interface EmailWorkerDeps {
  config: Config;
  db: Db;
  log: Logger;
  mailer: Mailer;
  queues: Queues;
  workerRedis: RedisClient;
}

/** The email job processor: dedupe, compose, send, classify failures. */
export function processEmailJob(deps: EmailWorkerDeps, composers: EmailComposers) {
  return async (job: Job): Promise<{ sent: boolean }> => {
    const compose = composers[job.name];
    if (!compose) throw new UnrecoverableError(`unknown email job name ${job.name}`);
    const jobId = job.id!;

    // A job re-published by the relay, or retried after its email went out, must not send twice.
    const alreadySent = await deps.db.selectFrom('sent_emails').select('job_id').where('job_id', '=', jobId).executeTakeFirst();
    if (alreadySent) return { sent: false };

    const email = await compose(job.data, job);
    if (!email) return { sent: false };

    try {
      await deps.mailer.send(email, jobId);
    } catch (error) {
      const failure = classifySmtpError(error);
      // SMTP replies often quote the recipient; the reason is stored with the job and logged.
      const reason = maskEmailsIn((error as Error).message);
      if (failure.kind === 'throttle') {
        const pauseMs = Math.min(Math.max(failure.retryAfterMs ?? deps.config.EMAIL_THROTTLE_MS, 1000), 3_600_000);
        deps.log.warn({ queue: EMAIL_QUEUE, jobId, jobName: job.name, attempt: job.attemptsStarted, pauseMs }, 'SMTP server throttled us; pausing the email queue');
        await deps.queues[EMAIL_QUEUE].rateLimit(pauseMs);
        // Puts the job back without spending an attempt.
        throw new RateLimitError();
      }
      if (failure.kind === 'permanent') throw new UnrecoverableError(`permanent SMTP failure: ${reason}`);
      throw new Error(`SMTP failure (will retry): ${reason}`);
    }
    await deps.db.insertInto('sent_emails').values({ job_id: jobId }).onConflict((oc) => oc.doNothing()).execute();
    return { sent: true };
  };
}

export function createEmailWorker(deps: EmailWorkerDeps, composers: EmailComposers): Worker {
  const { config } = deps;
  return new Worker(EMAIL_QUEUE, processEmailJob(deps, composers), {
    connection: deps.workerRedis,
    prefix: config.QUEUE_PREFIX,
    concurrency: config.EMAIL_CONCURRENCY,
    limiter: { max: config.EMAIL_RATE_MAX, duration: config.EMAIL_RATE_DURATION_MS },
    removeOnComplete: COMPLETED_JOBS_KEPT,
    lockDuration: config.WORKER_LOCK_DURATION_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
  });
}
