import { setTimeout as delay } from 'node:timers/promises';
import { groupByQueue, jobForRow, queueForRow, type OutboxDeps } from './producer.js';
import { republishRecentRows } from './republish.js';

/**
 * Publishes up to `batchSize` rows left unpublished for longer than `graceMs`,
 * one `addBulk` (one round trip) per queue. `SKIP LOCKED` lets several relays
 * share the backlog without waiting on each other.
 */
export async function relayOutboxBatch(deps: OutboxDeps, options: { graceMs: number; batchSize: number }): Promise<number> {
  return deps.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_name', 'payload', 'trace_context'])
      .where('published_at', 'is', null)
      .where('created_at', '<=', new Date(Date.now() - options.graceMs))
      .orderBy('id')
      .limit(options.batchSize)
      .forUpdate()
      .skipLocked()
      .execute();
    if (rows.length === 0) return 0;

    const published: string[] = [];
    for (const [queueName, queueRows] of groupByQueue(rows)) {
      try {
        if (deps.redis.status !== 'ready') throw new Error(`redis not connected (${deps.redis.status})`);
        await queueForRow(deps.queues, queueRows[0]!).addBulk(queueRows.map(jobForRow));
        published.push(...queueRows.map((row) => row.id));
      } catch (err) {
        deps.log.warn({ queue: queueName, rows: queueRows.length, err }, 'outbox relay could not publish; will retry');
        if (deps.redis.status !== 'ready') break; // Redis is away: the other queues would fail the same way.
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

/** How far back a reconnect re-adds published rows: failover detection plus promotion take seconds, not minutes. */
const REPUBLISH_WINDOW_MS = 60_000;

/**
 * Polls for unpublished rows until stopped; drains a backlog batch after batch
 * without sleeping. Each time the producer connection becomes ready (start,
 * reconnect, failover) it first re-adds the rows published in the last minute.
 */
export function startOutboxRelay(deps: OutboxDeps, options: { intervalMs: number; graceMs: number; batchSize?: number }): OutboxRelay {
  const batchSize = options.batchSize ?? 500;
  const stopping = new AbortController();
  let wake = () => {};
  let republishDue = deps.redis.status === 'ready';
  const onReady = () => {
    republishDue = true;
    wake();
  };
  deps.redis.on('ready', onReady);

  const loop = async () => {
    while (!stopping.signal.aborted) {
      if (republishDue && deps.redis.status === 'ready') {
        republishDue = false;
        try {
          const republished = await republishRecentRows(deps, { windowMs: REPUBLISH_WINDOW_MS, batchSize });
          if (republished > 0) deps.log.info({ republished }, 'outbox relay re-added recently published rows after (re)connecting');
        } catch (err) {
          republishDue = true;
          deps.log.warn({ err }, 'outbox relay could not re-add recently published rows; will retry');
        }
      }
      let published = 0;
      try {
        published = await relayOutboxBatch(deps, { graceMs: options.graceMs, batchSize });
        if (published > 0) deps.log.info({ published }, 'outbox relay published rows');
      } catch (err) {
        deps.log.warn({ err }, 'outbox relay pass failed');
      }
      if (published < batchSize) {
        const idle = new AbortController();
        wake = () => idle.abort();
        await delay(options.intervalMs, undefined, { signal: AbortSignal.any([stopping.signal, idle.signal]) }).catch(() => undefined);
      }
    }
  };
  const running = loop();

  return {
    async stop() {
      deps.redis.off('ready', onReady);
      stopping.abort();
      await running;
    },
  };
}
