import { RateLimitError, UnrecoverableError, type Job } from 'bullmq';
import type { Config } from '../config.js';
import { isDatabaseUnavailable } from '../core/errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { JobNameOf, PayloadOf, Processors, QueueDefinition } from '../core/job-registry.js';
import { maskEmail, maskEmailsIn, type Logger } from '../core/logger.js';
import type { SuppressionCheck, SuppressionReason } from '../db/suppressions.js';
import { inSpan } from '../core/tracing.js';
import type { Queues } from '../queues.js';
import { EMAIL_QUEUE, emailQueue } from './jobs.js';
import { setTimeout as delay } from 'node:timers/promises';
import { classifySmtpError, emailMessageId, messageIdDomain, type Mailer, type OutgoingEmail } from './mailer.js';
import type { SentEmails } from '../db/sent-emails.js';

/** The email queue's job registry (`emailQueue` in jobs.ts; a test may extend it with an email type of its own). */
export type EmailQueueDefinition = QueueDefinition<typeof EMAIL_QUEUE>;

/** A job's result: sent, skipped (already sent, nothing to send) or suppressed (the address bounced or complained). */
export type EmailJobResult = { sent: boolean; suppressed?: true; reason?: SuppressionReason };

/**
 * A composer's email. `suppressed`: when the composer's own statement already read the address's entry in the
 * suppression list (folded in, so the check costs no round trip), its reason, or null for none. Left out, the
 * worker looks the address up itself (one shared statement: deps.statements.findSuppression).
 */
export type ComposedEmail = OutgoingEmail & { suppressed?: SuppressionReason | null };

/** Reads fresh rows for a job and returns the email to send, or null when there is nothing to send any more. */
export type EmailComposer<N extends JobNameOf<Q>, Q extends EmailQueueDefinition = typeof emailQueue> = (
  data: PayloadOf<Q, N>,
  job: Job,
) => Promise<ComposedEmail | null>;
/** One composer per email job name of the registry: a new email job without its composer does not compile. */
export type EmailComposers<Q extends EmailQueueDefinition = typeof emailQueue> = { readonly [N in JobNameOf<Q>]: EmailComposer<N, Q> };

export interface EmailWorkerDeps {
  config: Config;
  log: Logger;
  mailer: Mailer;
  /** sent_emails and the suppression list's check (src/db), built once by createDeps. */
  statements: { sentEmails: SentEmails; findSuppression: SuppressionCheck };
  queues: Queues;
  metrics: Pick<Metrics, 'emailOutagePauses' | 'emailsSuppressed'>;
}

/**
 * The email queue's pauses during a downstream outage (SMTP unreachable or
 * refusing our credentials, PostgreSQL unreachable): the queue is rate-limited
 * for a delay that doubles per consecutive pause up to EMAIL_OUTAGE_MAX_PAUSE_MS,
 * and the job goes back without spending an attempt, however long the outage
 * lasts (EMAIL_MAX_STARTED_ATTEMPTS bounds it). One error line and one metric
 * increment per pause, not per job that runs into it.
 */
export function createOutagePauses(deps: EmailWorkerDeps) {
  let consecutive = 0;
  let pausedUntil = 0;
  return {
    async pause(cause: string, error: unknown, job: Job): Promise<never> {
      const now = Date.now();
      const newPause = now >= pausedUntil;
      if (newPause) consecutive += 1;
      const pauseMs = Math.min(
        deps.config.EMAIL_OUTAGE_PAUSE_MS * 2 ** Math.min(consecutive - 1, 30),
        deps.config.EMAIL_OUTAGE_MAX_PAUSE_MS,
      );
      if (newPause) {
        pausedUntil = now + pauseMs;
        deps.metrics.emailOutagePauses.inc({ cause });
        deps.log.error(
          {
            queue: EMAIL_QUEUE,
            jobId: job.id,
            jobName: job.name,
            attempt: job.attemptsStarted,
            cause,
            pauseMs,
            consecutivePauses: consecutive,
            reason: maskEmailsIn((error as Error)?.message ?? String(error)),
          },
          'downstream outage: pausing the email queue (no attempt spent)',
        );
      }
      await deps.queues[EMAIL_QUEUE].rateLimit(Math.max(1, pausedUntil - now));
      // Puts the job back without spending an attempt.
      throw new RateLimitError();
    },
    recovered(): void {
      if (consecutive === 0) return;
      deps.log.info({ queue: EMAIL_QUEUE, consecutivePauses: consecutive }, 'email downstream reachable again');
      consecutive = 0;
      pausedUntil = 0;
    },
  };
}

type OutagePauses = ReturnType<typeof createOutagePauses>;

/** Backoff between attempts to record an accepted send: from RECORD_RETRY_FIRST_MS doubling up to RECORD_RETRY_MAX_MS. */
const RECORD_RETRY_FIRST_MS = 50;
const RECORD_RETRY_MAX_MS = 2000;

// The pool is gone: the process is stopping (after the grace period), nothing can record any more.
const POOL_CLOSED = /Cannot use a pool after calling end|driver has already been destroyed/i;

/**
 * Records an accepted send until the record commits. The SMTP server has the message: any way out of here but a
 * committed record would let a retry of this job send it again (a verification email with a new token), so a
 * failure (PostgreSQL away, slow, or refusing the statement for a moment) is retried with a capped backoff, never
 * taken for an outage that puts the job back. BullMQ keeps extending the job's lock meanwhile. Only a stopping
 * process ends it unrecorded (its pool closed after the grace period, or the process killed): that job runs again
 * and repeats the email, with the same Message-ID.
 */
async function recordUntilCommitted(deps: EmailWorkerDeps, sentEmails: SentEmails, job: Job, messageId: string): Promise<void> {
  const jobId = job.id!;
  for (let attempt = 1; ; attempt += 1) {
    try {
      await sentEmails.record(jobId, messageId);
      if (attempt > 1) deps.log.info({ queue: EMAIL_QUEUE, jobId, jobName: job.name, attempts: attempt }, 'send recorded after retries');
      return;
    } catch (error) {
      const reason = maskEmailsIn((error as Error)?.message ?? String(error));
      if (POOL_CLOSED.test(reason)) {
        deps.log.error(
          { queue: EMAIL_QUEUE, jobId, jobName: job.name, reason },
          'stopping before an accepted send was recorded; a retry will repeat it',
        );
        throw error;
      }
      // The first failure, then one line per 20 (a long outage at the 2 s cap: one line a ~40 s).
      if (attempt === 1 || attempt % 20 === 0) {
        deps.log.warn(
          { queue: EMAIL_QUEUE, jobId, jobName: job.name, attempt, reason },
          'recording an accepted send failed; retrying until it commits',
        );
      }
      await delay(Math.min(RECORD_RETRY_FIRST_MS * 2 ** Math.min(attempt - 1, 16), RECORD_RETRY_MAX_MS));
    }
  }
}

/** The email job processor around one composer: dedupe, compose, send, classify failures. */
export function processEmailJob<Data>(
  deps: EmailWorkerDeps,
  compose: (data: Data, job: Job) => Promise<ComposedEmail | null>,
  outages: OutagePauses = createOutagePauses(deps),
  sentEmails: SentEmails = deps.statements.sentEmails,
) {
  const domain = messageIdDomain(deps.config.MAIL_FROM, deps.config.PUBLIC_BASE_URL);
  const sendOnce = async (data: Data, job: Job): Promise<EmailJobResult> => {
    const jobId = job.id!;

    // A job re-published by the relay, or retried after its email went out, must not send twice.
    if (await sentEmails.wasSent(jobId)) return { sent: false };

    const composed = await compose(data, job);
    if (!composed) return { sent: false };
    // A hard bounce, a complaint or repeated soft bounces: never mail the address again (deliverability).
    const { suppressed, ...message } = composed;
    // The reason the address is suppressed for, or null (the SMTP failure's `reason` below is another thing).
    const suppression = suppressed !== undefined ? suppressed : await deps.statements.findSuppression(message.to);
    if (suppression) {
      deps.log.info(
        { queue: EMAIL_QUEUE, jobId, jobName: job.name, recipient: maskEmail(message.to), reason: suppression },
        'email suppressed',
      );
      deps.metrics.emailsSuppressed.inc();
      return { sent: false, suppressed: true, reason: suppression };
    }
    // The same on every attempt of this job: a repeat is recognisable as one.
    const messageId = emailMessageId(jobId, domain);
    const email: OutgoingEmail = { ...message, messageId };

    try {
      // A span of its own: the SMTP round trip is most of an email job's time. No address in it.
      await inSpan('smtp send', { 'errand.job.id': jobId, 'errand.job.name': job.name }, () => deps.mailer.send(email, jobId));
    } catch (error) {
      const failure = classifySmtpError(error);
      // SMTP replies often quote the recipient; the reason is stored with the job and logged.
      const reason = maskEmailsIn((error as Error).message);
      if (failure.kind === 'outage') return outages.pause(failure.cause, error, job);
      if (failure.kind === 'throttle') {
        const pauseMs = Math.min(Math.max(failure.retryAfterMs ?? deps.config.EMAIL_THROTTLE_MS, 1000), 3_600_000);
        deps.log.warn(
          { queue: EMAIL_QUEUE, jobId, jobName: job.name, attempt: job.attemptsStarted, pauseMs },
          'SMTP server throttled us; pausing the email queue',
        );
        await deps.queues[EMAIL_QUEUE].rateLimit(pauseMs);
        // Puts the job back without spending an attempt.
        throw new RateLimitError();
      }
      if (failure.kind === 'permanent') throw new UnrecoverableError(`permanent SMTP failure: ${reason}`);
      throw new Error(`SMTP failure (will retry): ${reason}`, { cause: error });
    }
    await recordUntilCommitted(deps, sentEmails, job, messageId);
    return { sent: true };
  };

  return async (data: Data, job: Job): Promise<EmailJobResult> => {
    try {
      const result = await sendOnce(data, job);
      outages.recovered();
      return result;
    } catch (error) {
      // PostgreSQL away (reading the rows before the send): an outage, not this email's fault. After the send, the
      // record is retried until it commits (recordUntilCommitted) and never lands here.
      if (!(error instanceof RateLimitError) && !(error instanceof UnrecoverableError) && isDatabaseUnavailable(error)) {
        return outages.pause('postgres-unreachable', error, job);
      }
      throw error;
    }
  };
}

/**
 * The email queue's processors, one per job name of the registry, each the same send path around its own composer.
 * No job name is spelled here: a new email type is its template, its composer (composers.ts) and its registry line
 * (jobs.ts). `definition` is the registry (emailQueue unless a test extends it).
 */
export function emailProcessors<Q extends EmailQueueDefinition = typeof emailQueue>(
  deps: EmailWorkerDeps,
  composers: NoInfer<EmailComposers<Q>>,
  definition: Q = emailQueue as EmailQueueDefinition as Q,
): Processors<Q> {
  // One pause state for the queue: every job kind runs into the same SMTP server and database.
  const outages = createOutagePauses(deps);
  const { sentEmails } = deps.statements;
  const processors: Record<string, unknown> = {};
  for (const name of Object.keys(definition.jobs) as JobNameOf<Q>[]) {
    processors[name] = processEmailJob(deps, composers[name] as EmailComposer<typeof name, Q>, outages, sentEmails);
  }
  return processors as Processors<Q>;
}
