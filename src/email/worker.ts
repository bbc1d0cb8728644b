import { RateLimitError, UnrecoverableError, type Job } from 'bullmq';
import type { Config } from '../config.js';
import type { Db } from '../core/db.js';
import type { JobNameOf, PayloadOf, Processors } from '../core/job-registry.js';
import { maskEmailsIn, type Logger } from '../core/logger.js';
import { inSpan } from '../core/tracing.js';
import type { Queues } from '../queues.js';
import { EMAIL_QUEUE, emailQueue } from './jobs.js';
import { classifySmtpError, type Mailer, type OutgoingEmail } from './mailer.js';

type EmailJobName = JobNameOf<typeof emailQueue>;

/** Reads fresh rows for a job and returns the email to send, or null when there is nothing to send any more. */
export type EmailComposer<N extends EmailJobName> = (data: PayloadOf<typeof emailQueue, N>, job: Job) => Promise<OutgoingEmail | null>;
/** One composer per email job name: a new email job without its composer does not compile. */
export type EmailComposers = { readonly [N in EmailJobName]: EmailComposer<N> };

export interface EmailWorkerDeps {
  config: Config;
  db: Db;
  log: Logger;
  mailer: Mailer;
  queues: Queues;
}

/** The email job processor around one composer: dedupe, compose, send, classify failures. */
export function processEmailJob<N extends EmailJobName>(deps: EmailWorkerDeps, compose: EmailComposer<N>) {
  return async (data: PayloadOf<typeof emailQueue, N>, job: Job): Promise<{ sent: boolean }> => {
    const jobId = job.id!;

    // A job re-published by the relay, or retried after its email went out, must not send twice.
    const alreadySent = await deps.db.selectFrom('sent_emails').select('job_id').where('job_id', '=', jobId).executeTakeFirst();
    if (alreadySent) return { sent: false };

    const email = await compose(data, job);
    if (!email) return { sent: false };

    try {
      // A span of its own: the SMTP round trip is most of an email job's time. No address in it.
      await inSpan('smtp send', { 'errand.job.id': jobId, 'errand.job.name': job.name }, () => deps.mailer.send(email, jobId));
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

/** The email queue's processors: every job kind goes through the same send path with its own composer. */
export function emailProcessors(deps: EmailWorkerDeps, composers: EmailComposers): Processors<typeof emailQueue> {
  return {
    'email-verification': processEmailJob(deps, composers['email-verification']),
    'order-tracking-link': processEmailJob(deps, composers['order-tracking-link']),
  };
}
