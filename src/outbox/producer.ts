import type { Transaction } from 'kysely';
import type { RedisClient } from '../core/redis.js';
import type { Database, Db } from '../db/schema.js';
import { createOutboxRowSender, insertOutboxRow, outboxJob, outboxJobId, type OutboxRow } from '../db/outbox.js';
import type { Logger } from '../core/logger.js';
import { jobOptionsFor, queueDefinition, type JobName, type Payload, type QueueName, type Queues } from '../queues.js';
import type { PublishedMarks } from './published-marks.js';
import { activeTraceContext, inTraceContext, jobTelemetryFor } from '../core/tracing.js';
import type { Config } from '../config.js';
import { UnknownQueueError } from './row-fault.js';

export { outboxJobId, type OutboxRow } from '../db/outbox.js';

/** Records a job in the caller's transaction (db/outbox.ts); it reaches Redis only after commit (`publishAfterCommit`). */
export async function enqueue<Q extends QueueName, N extends JobName<Q>>(
  trx: Transaction<Database>,
  queue: Q,
  jobName: N,
  data: Payload<Q, N>,
): Promise<OutboxRow> {
  return insertOutboxRow(trx, outboxJob(queueDefinition(queue), jobName), data);
}

export interface OutboxDeps {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
  /** Shares Redis writes among concurrent publishers (createPublisher), built once by createDeps. */
  publisher: Publisher;
  /** Read for OUTBOX_PUBLISH_DEADLINE_MS (absent: DEFAULT_PUBLISH_DEADLINE_MS). */
  config?: Partial<Pick<Config, 'OUTBOX_PUBLISH_DEADLINE_MS'>>;
}

/** How long a request waits for its jobs to reach Redis when OUTBOX_PUBLISH_DEADLINE_MS is not given. */
export const DEFAULT_PUBLISH_DEADLINE_MS = 300;

/**
 * The `queue.add` arguments for one outbox row: its job name, payload, stable id and declared options, and,
 * when the row carries a trace context, that context as the job's telemetry metadata (the consumer continues it).
 */
export function jobForRow(row: OutboxRow) {
  return {
    name: row.job_name,
    data: row.payload,
    opts: { jobId: outboxJobId(row.id), ...jobOptionsFor(row.queue, row.job_name), ...jobTelemetryFor(row.trace_context) },
  };
}

/** The producer Queue for a row, or an error naming the row when its queue does not exist (any more). */
export function queueForRow(queues: Queues, row: OutboxRow) {
  const queue = (queues as Readonly<Record<string, Queues[QueueName] | undefined>>)[row.queue];
  if (!queue) throw new UnknownQueueError(`outbox row ${row.id} names unknown queue ${row.queue}`);
  return queue;
}

/**
 * One row's job alone, within the row's own trace: `add` (unlike `addBulk`) replaces the job's telemetry metadata
 * with the active context, which in a batch or the relay is not the row's.
 */
export function addRow(queues: Queues, row: OutboxRow) {
  const job = jobForRow(row);
  return inTraceContext(row.trace_context, () => queueForRow(queues, row).add(job.name, job.data, job.opts));
}

/** Rows grouped by queue, in their order: one `addBulk` (one round trip) per queue. */
export function groupByQueue(rows: readonly OutboxRow[]): Map<string, OutboxRow[]> {
  const byQueue = new Map<string, OutboxRow[]>();
  for (const row of rows) {
    const group = byQueue.get(row.queue);
    if (group) group.push(row);
    else byQueue.set(row.queue, [row]);
  }
  return byQueue;
}

// Most rows one publish batch takes (one pipeline per queue).
const PUBLISH_BATCH_MAX = 500;

/** Publishes one freshly committed row; rows of one event-loop turn share one `addBulk` per queue. */
export type Publisher = (row: OutboxRow) => Promise<void>;
const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/**
 * The rows that requests publish in one event-loop turn (and while two earlier batches are in Redis) go as one
 * `addBulk` per queue: one pipeline, one socket write and one round trip for many jobs, instead of one of each per
 * job. A row alone goes as a plain `add` (an ioredis pipeline costs more than it saves for one command). A failed
 * `addBulk` fails its rows: they stay unpublished for the relay, which alone retries row by row (a request must
 * not wait on one round trip per row of a slow Redis). A row still waiting for its batch after `deadlineMs` is
 * given up at once, so a Redis that is slow to answer cannot pile up rows here. Each job carries the trace of the
 * request that published it (captured before the batch, which runs in another request's context).
 * The batching itself is db/outbox.ts (createOutboxRowSender); this is what one batch does in Redis.
 */
export function createPublisher(queues: Queues, deadlineMs: number = DEFAULT_PUBLISH_DEADLINE_MS): Publisher {
  return createOutboxRowSender(
    async (rows) => {
      const failures = new Map<OutboxRow, Error>();
      await Promise.all(
        [...groupByQueue(rows).values()].map(async (group) => {
          try {
            if (group.length === 1) await addRow(queues, group[0]);
            else await queueForRow(queues, group[0]).addBulk(group.map(jobForRow));
          } catch (err) {
            for (const row of group) failures.set(row, asError(err));
          }
        }),
      );
      return rows.map((row) => failures.get(row));
    },
    { maxBatch: PUBLISH_BATCH_MAX, deadlineMs },
  );
}

/**
 * Publishes freshly committed rows. Never throws, and returns within the publish deadline
 * (OUTBOX_PUBLISH_DEADLINE_MS): a row that cannot reach Redis by then (Redis away, slow, refusing writes) stays
 * unpublished and the relay picks it up later; one that reaches Redis after the deadline is still marked.
 * Published rows are marked within ~20 ms, in one UPDATE shared with concurrent callers.
 */
export async function publishAfterCommit(deps: OutboxDeps, rows: OutboxRow[]): Promise<void> {
  if (rows.length === 0) return;
  const deadlineMs = deps.config?.OUTBOX_PUBLISH_DEADLINE_MS ?? DEFAULT_PUBLISH_DEADLINE_MS;
  const pending = new Set(rows);
  const all = Promise.all(
    rows.map(async (row) => {
      try {
        // Before the first connect BullMQ would wait for Redis; fail at once instead.
        if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
        await deps.publisher(row.trace_context === undefined ? { ...row, trace_context: activeTraceContext() } : row);
        deps.publishedMarks.add([row.id]);
      } catch (err) {
        deps.log.warn({ outboxId: row.id, queue: row.queue, jobName: row.job_name, err }, 'outbox publish deferred to relay');
      } finally {
        pending.delete(row);
      }
    }),
  );
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, deadlineMs);
    timer.unref();
  });
  await Promise.race([all, deadline]);
  clearTimeout(timer);
  for (const row of pending) {
    deps.log.warn(
      { outboxId: row.id, queue: row.queue, jobName: row.job_name, deadlineMs },
      'outbox publish not confirmed within the deadline; answering, the relay publishes it if Redis does not',
    );
  }
}
