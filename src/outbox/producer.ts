import type { Transaction } from 'kysely';
import type { RedisClient } from '../core/redis.js';
import type { Database, Db } from '../db/schema.js';
import { insertOutboxRow, outboxJob, outboxJobId, type OutboxRow } from '../db/outbox.js';
import type { Logger } from '../core/logger.js';
import { jobOptionsFor, queueDefinition, type JobName, type Payload, type QueueName, type Queues } from '../queues.js';
import type { PublishedMarks } from './published-marks.js';
import { activeTraceContext, inTraceContext, jobTelemetryFor } from '../core/tracing.js';
import { createBatcher } from '../db/batcher.js';

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
}

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
  if (!queue) throw new Error(`outbox row ${row.id} names unknown queue ${row.queue}`);
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
 * `addBulk` is retried row by row; a row that still fails stays unpublished for the relay. Each job carries the
 * trace of the request that published it (captured before the batch, which runs in another request's context).
 */
export function createPublisher(queues: Queues): Publisher {
  const batched = createBatcher<OutboxRow, Error | undefined>({
    maxBatch: PUBLISH_BATCH_MAX,
    maxInFlight: 2,
    async run(rows) {
      const failures = new Map<OutboxRow, Error>();
      await Promise.all(
        [...groupByQueue(rows).values()].map(async (group) => {
          let queue: Queues[QueueName];
          try {
            queue = queueForRow(queues, group[0]);
          } catch (err) {
            for (const row of group) failures.set(row, asError(err)); // these rows alone: their queue does not exist
            return;
          }
          if (group.length > 1) {
            const added = await queue.addBulk(group.map(jobForRow)).then(
              () => true,
              () => false,
            );
            if (added) return;
          }
          // Alone, or after a failed addBulk row by row as the relay does: the row at fault is found and the rest
          // still go (an id already added is a no-op); with Redis away each add fails at once.
          for (const row of group) {
            try {
              await addRow(queues, row);
            } catch (err) {
              failures.set(row, asError(err));
            }
          }
        }),
      );
      return rows.map((row) => failures.get(row));
    },
  });
  return async (row) => {
    const failure = await batched(row);
    if (failure !== undefined) throw failure;
  };
}

/**
 * Publishes freshly committed rows. Never throws: a row that cannot reach
 * Redis now stays unpublished and the relay picks it up later. Published rows
 * are marked within ~20 ms, in one UPDATE shared with concurrent callers.
 */
export async function publishAfterCommit(deps: OutboxDeps, rows: OutboxRow[]): Promise<void> {
  const publish = deps.publisher;
  const published: string[] = [];
  await Promise.all(
    rows.map(async (row) => {
      try {
        // Before the first connect BullMQ would wait for Redis; fail at once instead.
        if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
        await publish(row.trace_context === undefined ? { ...row, trace_context: activeTraceContext() } : row);
        published.push(row.id);
      } catch (err) {
        deps.log.warn({ outboxId: row.id, queue: row.queue, jobName: row.job_name, err }, 'outbox publish deferred to relay');
      }
    }),
  );
  if (published.length > 0) deps.publishedMarks.add(published);
}
