import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Job, Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { RedisClient } from '../core/redis.js';
import { sql } from 'kysely';
import type { Db } from '../db/schema.js';
import { describeRoutes } from '../core/route-docs.js';
import type { Logger } from '../core/logger.js';
import { QUEUE_NAMES, type QueueName, type Queues } from '../queues.js';

export interface Metrics {
  /** errand's own registry: never prom-client's global one, so several apps can live in one process (tests). */
  registry: Registry;
  jobsCompleted: Counter<'queue' | 'name'>;
  jobsFailed: Counter<'queue' | 'name'>;
  jobsStalled: Counter<'queue'>;
  jobDuration: Histogram<'queue' | 'name' | 'status'>;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  /** Email queue pauses for a downstream outage, by cause (smtp-unreachable, smtp-unavailable, smtp-auth, postgres-unreachable). */
  emailOutagePauses: Counter<'cause'>;
  /** Outbox rows the relay gave up on after OUTBOX_MAX_FAILURES failed passes. */
  outboxRowsSkipped: Counter<'queue'>;
  /** Payment sweeps run in production against the built-in simulator (PAYMENT_PROVIDER_URL unset). */
  sweepsWithoutProvider: Counter;
  /** Rows deleted by the retention job, per table. */
  retentionDeletedRows: Counter<'table'>;
  /** Orders moved failed | expired → paid (a successful retry after a decline). */
  paymentsLateSuccess: Counter;
  /** Bounces and complaints received (each once), and events of types errand does not act on, per provider. */
  emailEvents: Counter<'provider' | 'kind'>;
  /** Emails not sent because the address is suppressed (the email worker counts them). */
  emailsSuppressed: Counter;
}

export interface MetricsSources {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
}

const JOB_DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Runs `read` for every queue at once, for a gauge read on scrape. Skipped while Redis is not ready (before the
 * first connect BullMQ would wait for it, and a scrape must not hang); a queue that fails is logged, not fatal.
 */
async function collectPerQueue(sources: MetricsSources, failure: string, read: (name: QueueName) => Promise<void>): Promise<void> {
  if (sources.redis.status !== 'ready') return;
  await Promise.all(
    QUEUE_NAMES.map((name) => read(name).catch((err: unknown) => sources.log.warn({ queue: name, err }, `metrics: ${failure}`))),
  );
}

/**
 * Creates the registry and every metric. Queue depth and outbox backlog are
 * read on scrape; job and HTTP metrics are fed by `instrumentWorker` and
 * `instrumentHttp`.
 */
export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // A Gauge rather than BullMQ's exportPrometheusMetrics(): that returns a text
  // block per queue whose HELP/TYPE lines repeat, which cannot be joined into
  // one valid exposition nor into this registry.
  new Gauge({
    name: 'errand_queue_jobs',
    help: 'Jobs in each BullMQ queue by state (getJobCounts), read on scrape',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      await collectPerQueue(sources, 'could not read queue counts', async (name) => {
        const counts = await sources.queues[name].getJobCounts();
        for (const [state, count] of Object.entries(counts)) this.set({ queue: name, state }, count);
      });
    },
  });

  // A scheduler whose next run is long past has no worker taking its jobs
  // (BullMQ moves `next` on when the current iteration starts): the alert for a silent schedule.
  new Gauge({
    name: 'errand_job_scheduler_next_run_timestamp_seconds',
    help: 'Next run of each BullMQ job scheduler (unix seconds), read on scrape',
    labelNames: ['queue', 'scheduler'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      await collectPerQueue(sources, 'could not read job schedulers', async (name) => {
        for (const scheduler of await sources.queues[name].getJobSchedulers(0, -1, true)) {
          if (scheduler.next !== undefined) this.set({ queue: name, scheduler: scheduler.key }, scheduler.next / 1000);
        }
      });
    },
  });

  // Both backlog gauges come from one query; the registry collects metrics
  // in parallel, so the second collect joins the query the first started.
  let backlogQuery: Promise<{ rows: number; ageSeconds: number } | undefined> | undefined;
  const readBacklog = () =>
    (backlogQuery ??= sql<{ count: string; age: number | null }>`
      select count(*) as count, extract(epoch from now() - min(created_at))::float8 as age
      from outbox where published_at is null`
      .execute(sources.db)
      .then(({ rows }) => ({ rows: Number(rows[0]?.count ?? 0), ageSeconds: Math.max(0, rows[0]?.age ?? 0) }))
      .catch((err: unknown) => {
        sources.log.warn({ err }, 'metrics: could not read the outbox backlog');
        return undefined;
      })
      .finally(() => {
        backlogQuery = undefined;
      }));
  new Gauge({
    name: 'errand_outbox_unpublished_rows',
    help: 'Outbox rows not yet published to BullMQ, read on scrape',
    registers: [registry],
    async collect() {
      const backlog = await readBacklog();
      if (backlog) this.set(backlog.rows);
      else this.reset();
    },
  });
  new Gauge({
    name: 'errand_outbox_oldest_unpublished_age_seconds',
    help: 'Age of the oldest unpublished outbox row (0 when none), read on scrape',
    registers: [registry],
    async collect() {
      const backlog = await readBacklog();
      if (backlog) this.set(backlog.ageSeconds);
      else this.reset();
    },
  });

  const emailEvents = new Counter({
    name: 'errand_email_events_total',
    help: 'Email events received from the providers, per provider and kind (hard_bounce, soft_bounce, complaint, ignored); a repeated delivery counts once',
    labelNames: ['provider', 'kind'] as const,
    registers: [registry],
  });
  // Every series at 0 from the start, so the bounce and complaint rate rules see the first event.
  for (const provider of ['ses', 'sendgrid', 'mailgun', 'postmark', 'resend'])
    for (const kind of ['hard_bounce', 'soft_bounce', 'complaint', 'ignored']) emailEvents.inc({ provider, kind }, 0);

  return {
    registry,
    emailEvents,
    emailsSuppressed: new Counter({
      name: 'errand_emails_suppressed_total',
      help: 'Emails the worker did not send because the address is on the suppression list',
      registers: [registry],
    }),
    jobsCompleted: new Counter({
      name: 'errand_jobs_completed_total',
      help: 'Jobs completed by this process, per queue and job name',
      labelNames: ['queue', 'name'] as const,
      registers: [registry],
    }),
    jobsFailed: new Counter({
      name: 'errand_jobs_failed_total',
      help: 'Failed job attempts in this process (retried or final), per queue and job name',
      labelNames: ['queue', 'name'] as const,
      registers: [registry],
    }),
    jobsStalled: new Counter({
      name: 'errand_jobs_stalled_total',
      help: "Jobs this process's stalled check found without a live lock (their worker died) and put back, per queue",
      labelNames: ['queue'] as const,
      registers: [registry],
    }),
    jobDuration: new Histogram({
      name: 'errand_job_duration_seconds',
      help: 'Processing time of job attempts in this process, per queue, job name and outcome',
      labelNames: ['queue', 'name', 'status'] as const,
      buckets: JOB_DURATION_BUCKETS,
      registers: [registry],
    }),
    emailOutagePauses: new Counter({
      name: 'errand_email_outage_pauses_total',
      help: 'Pauses of the email queue because SMTP or PostgreSQL was unreachable or refused our credentials, by cause',
      labelNames: ['cause'] as const,
      registers: [registry],
    }),
    outboxRowsSkipped: new Counter({
      name: 'errand_outbox_rows_skipped_total',
      help: 'Outbox rows skipped by the relay after repeated failures (see the error log and outbox.last_error)',
      labelNames: ['queue'] as const,
      registers: [registry],
    }),
    sweepsWithoutProvider: new Counter({
      name: 'errand_payments_sweeps_without_provider_total',
      help: 'Payment sweeps run with NODE_ENV=production but no PAYMENT_PROVIDER_URL (they talk to the simulator and settle nothing)',
      registers: [registry],
    }),
    retentionDeletedRows: new Counter({
      name: 'errand_retention_deleted_rows_total',
      help: 'Rows deleted by the maintenance retention job, per table',
      labelNames: ['table'] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'errand_http_request_duration_seconds',
      help: 'HTTP request duration by method, route pattern and status code',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: HTTP_DURATION_BUCKETS,
      registers: [registry],
    }),
    paymentsLateSuccess: new Counter({
      name: 'errand_payments_late_success_total',
      help: 'Orders marked paid after they were failed or expired (a successful payment after a declined or expired one), by this process',
      registers: [registry],
    }),
  };
}

function attemptSeconds(job: Job): number {
  const end = job.finishedOn ?? Date.now();
  return job.processedOn ? Math.max(0, end - job.processedOn) / 1000 : 0;
}

/** Feeds the job counters and histogram from a worker's own events. */
export function instrumentWorker(worker: Worker, metrics: Metrics): void {
  const queue = worker.name;
  // Present at 0 from the start, so an alert's increase() sees the first stalled job.
  metrics.jobsStalled.inc({ queue }, 0);
  worker.on('stalled', () => metrics.jobsStalled.inc({ queue }));
  worker.on('completed', (job) => {
    metrics.jobsCompleted.inc({ queue, name: job.name });
    metrics.jobDuration.observe({ queue, name: job.name, status: 'completed' }, attemptSeconds(job));
  });
  worker.on('failed', (job) => {
    const name = job?.name ?? 'unknown';
    metrics.jobsFailed.inc({ queue, name });
    if (job) metrics.jobDuration.observe({ queue, name, status: 'failed' }, attemptSeconds(job));
  });
}

/** Times every response by its route pattern (never the raw URL: ids would explode the label set). */
export function instrumentHttp(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
}

/** `GET /metrics` in Prometheus text format; served by every role. */
export const metricsRoutes = async (app: FastifyInstance, options: { metrics: Metrics }) => {
  app.addHook(
    'onRoute',
    describeRoutes({
      'GET /metrics': {
        tags: ['ops'],
        summary: 'Prometheus metrics of this process (text format 0.0.4)',
        description:
          'Queue depth per queue and state, job completions, failures and durations, outbox backlog, HTTP durations, process metrics. See the README for the list.',
        responses: { 200: { description: 'Prometheus text exposition', content: { 'text/plain': { schema: { type: 'string' } } } } },
      },
    }),
  );
  app.get('/metrics', async (_request, reply) => {
    const body = await options.metrics.registry.metrics();
    return reply.type(options.metrics.registry.contentType).send(body);
  });
};
