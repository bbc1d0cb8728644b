import { setTimeout as delay } from 'node:timers/promises';
import { jobForRow, queueForRow, type OutboxDeps, type OutboxRow } from './producer.js';

/**
 * Publishes up to `batchSize` rows left unpublished for longer than `graceMs`,
 * one `addBulk` (one round trip) per queue. `SKIP LOCKED` lets several relays
 * share the backlog without waiting on each other.
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

    const byQueue = new Map<string, OutboxRow[]>();
    for (const row of rows) byQueue.set(row.queue, [...(byQueue.get(row.queue) ?? []), row]);
    const published: string[] = [];
    for (const [queueName, queueRows] of byQueue) {
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

/** Polls for unpublished rows until stopped; drains a backlog batch after batch without sleeping. */
export function startOutboxRelay(deps: OutboxDeps, options: { intervalMs: number; graceMs: number; batchSize?: number }): OutboxRelay {
  const batchSize = options.batchSize ?? 500;
  const stopping = new AbortController();

  const loop = async () => {
    while (!stopping.signal.aborted) {
      let published = 0;
      try {
        published = await relayOutboxBatch(deps, { graceMs: options.graceMs, batchSize });
        if (published > 0) deps.log.info({ published }, 'outbox relay published rows');
      } catch (err) {
        deps.log.warn({ err }, 'outbox relay pass failed');
      }
      if (published < batchSize) await delay(options.intervalMs, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
  };
  const running = loop();

  return {
    async stop() {
      stopping.abort();
      await running;
    },
  };
}
