import { sql } from 'kysely';
import type { Db } from '../db/schema.js';
import type { Logger } from '../core/logger.js';

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
