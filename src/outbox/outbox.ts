import { sql, type Transaction } from 'kysely';
import type { RedisClient } from '../core/redis.js';
import type { Database, Db } from '../core/db.js';
import type { Logger } from '../core/logger.js';
import type { QueueName, Queues } from '../core/queues.js';

export interface OutboxRow {
  id: string;
  queue: string;
  job_name: string;
  payload: unknown;
}

/** BullMQ job ids may not contain `:` nor be all digits; this one is stable per outbox row, so re-publishing is a no-op. */
export function outboxJobId(outboxId: string): string {
  return `outbox-${outboxId}`;
}

/** Records a job in the caller's transaction; it reaches Redis only after commit. */
export async function insertOutboxJob(
  trx: Transaction<Database>,
  job: { queue: QueueName; name: string; data: Record<string, unknown> },
): Promise<OutboxRow> {
  return trx
    .insertInto('outbox')
    .values({ queue: job.queue, job_name: job.name, payload: JSON.stringify(job.data) })
    .returning(['id', 'queue', 'job_name', 'payload'])
    .executeTakeFirstOrThrow();
}

export interface OutboxDeps {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
}

async function addToQueue(deps: OutboxDeps, row: OutboxRow): Promise<void> {
  // Before the first connect BullMQ would wait for Redis; fail at once instead.
  if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
  const queue = deps.queues[row.queue as QueueName];
  if (!queue) throw new Error(`outbox row ${row.id} names unknown queue ${row.queue}`);
  await queue.add(row.job_name, row.payload as Record<string, unknown>, { jobId: outboxJobId(row.id) });
}

// Marking rows published is bookkeeping for the relay, not part of the guarantee: batching the UPDATE across
// concurrent publishers saves a round trip and a commit per job. A mark lost in a crash only means the relay
// re-adds the row under the same job id, which BullMQ ignores (and `sent_emails` stops a second send).
const MARK_FLUSH_MS = 20;
const MARK_BATCH_MAX = 100;

export interface PublishedMarks {
  /** Queues ids whose jobs are in Redis; they are marked within MARK_FLUSH_MS, in one UPDATE. */
  add(ids: string[]): void;
  /** Writes what is still held; call before closing the pool. */
  flush(): Promise<void>;
}

export function createPublishedMarks(db: Db, log: Logger): PublishedMarks {
  let ids: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flushing = new Set<Promise<void>>();

  const flushNow = (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    if (ids.length === 0) return Promise.resolve();
    const batch = ids;
    ids = [];
    const flush = db
      .updateTable('outbox')
      .set({ published_at: new Date() })
      .where(sql<boolean>`id = any(${batch}::bigint[])`)
      .where('published_at', 'is', null)
      .execute()
      .then(
        () => undefined,
        // The jobs are in Redis; the relay will re-add them under the same ids, which BullMQ ignores.
        (err: unknown) => log.warn({ err, rows: batch.length }, 'could not mark outbox rows published'),
      )
      .finally(() => flushing.delete(flush));
    flushing.add(flush);
    return flush;
  };

  return {
    add(published) {
      ids.push(...published);
      if (ids.length >= MARK_BATCH_MAX) void flushNow();
      else timer ??= setTimeout(() => void flushNow(), MARK_FLUSH_MS);
    },
    async flush() {
      await flushNow();
      await Promise.allSettled([...flushing]);
    },
  };
}

/**
 * Publishes freshly committed rows. Never throws: a row that cannot reach
 * Redis now stays unpublished and the relay picks it up later. Published rows
 * are marked within ~20 ms, in one UPDATE shared with concurrent callers.
 */
export async function publishAfterCommit(deps: OutboxDeps, rows: OutboxRow[]): Promise<void> {
  const published: string[] = [];
  for (const row of rows) {
    try {
      await addToQueue(deps, row);
      published.push(row.id);
    } catch (err) {
      deps.log.warn({ outboxId: row.id, queue: row.queue, jobName: row.job_name, err }, 'outbox publish deferred to relay');
    }
  }
  if (published.length > 0) deps.publishedMarks.add(published);
}

/**
 * Publishes up to `batchSize` rows left unpublished for longer than `graceMs`.
 * `SKIP LOCKED` lets several relays share the backlog without waiting on each other.
 */
export async function relayOutboxBatch(deps: OutboxDeps, options: { graceMs: number; batchSize: number }): Promise<number> {
  return deps.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload'])
      .where('published_at', 'is', null)
      .where('created_at', '<=', new Date(Date.now() - options.graceMs))
      .orderBy('id')
      .limit(options.batchSize)
      .forUpdate()
      .skipLocked()
      .execute();
    if (rows.length === 0) return 0;
    const published: string[] = [];
    for (const row of rows) {
      try {
        await addToQueue(deps, row);
        published.push(row.id);
      } catch (err) {
        deps.log.warn({ outboxId: row.id, err }, 'outbox relay could not publish; will retry');
        break; // Redis is most likely away: stop this batch, keep order.
      }
    }
    if (published.length > 0) {
      await trx.updateTable('outbox').set({ published_at: new Date() }).where('id', 'in', published).execute();
    }
    return published.length;
  });
}

export interface OutboxRelay {
  stop(): Promise<void>;
}

/** Polls for unpublished rows until stopped; drains a backlog batch after batch without sleeping. */
export function startOutboxRelay(deps: OutboxDeps, options: { intervalMs: number; graceMs: number; batchSize?: number }): OutboxRelay {
  const batchSize = options.batchSize ?? 100;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;

  const loop = async () => {
    while (!stopped) {
      let published = 0;
      try {
        published = await relayOutboxBatch(deps, { graceMs: options.graceMs, batchSize });
        if (published > 0) deps.log.info({ published }, 'outbox relay published rows');
      } catch (err) {
        deps.log.warn({ err }, 'outbox relay pass failed');
      }
      if (published < batchSize && !stopped) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, options.intervalMs);
        });
      }
    }
  };
  const running = loop();

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await running;
    },
  };
}
