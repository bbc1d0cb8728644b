/**
 * Runs many callers' items as one call of `run`: the items submitted in one event-loop turn, plus those
 * that arrived while `maxInFlight` earlier batches were still running, go together. An idle service thus
 * runs each item alone and at once; a busy one runs fewer, larger statements (for PostgreSQL most of a small
 * write's cost is per statement and per commit: on this machine one single-row signup statement at a time
 * managed 8,900 rows/s, ten rows a statement 45,800).
 *
 * `keysOf` names what an item touches that no other item of the same batch may touch (a statement can
 * update a row only once): a colliding item waits until the batch holding that key is done, and items
 * sharing a key run in the order they came.
 */
export interface BatcherOptions<I, O> {
  /** Resolves to one result per item, in the items' order; a rejection rejects every item of the batch (but see retryAlone). */
  run: (items: I[]) => Promise<O[]>;
  maxBatch: number;
  maxInFlight: number;
  keysOf?: (item: I) => readonly string[];
  /**
   * When a batch of several items fails with an error this accepts, each item is queued again to run alone
   * (ahead of anything that came later, in its order), so only the item at fault fails: for errors one item can
   * cause for all (a deadlock with another code path, a serialization failure), not for an outage or a statement
   * timeout that every retry would meet again. The retries run within maxInFlight like any batch.
   */
  retryAlone?: (error: unknown) => boolean;
  /**
   * An item not yet started after `ms` is rejected with `error()` (nothing of it was written): when the
   * statements in flight hang, callers fail as they would waiting for a pooled connection, instead of queueing
   * without bound.
   */
  maxWait?: { ms: number; error: () => Error };
}

interface Pending<I, O> {
  item: I;
  /** Queued again after its batch failed (retryAlone): runs as a batch of its own. */
  alone?: boolean;
  resolve(result: O): void;
  reject(error: unknown): void;
  timer?: NodeJS.Timeout;
}

export function createBatcher<I, O>(options: BatcherOptions<I, O>): (item: I) => Promise<O> {
  const { run, maxBatch, maxInFlight, keysOf, retryAlone, maxWait } = options;
  let waiting: Pending<I, O>[] = [];
  let inFlight = 0;
  let scheduled = false;

  // Keys of the batches running now: an item touching one waits until that batch is done (per key, in order).
  const keysInFlight = new Set<string>();

  const takeBatch = (): { batch: Pending<I, O>[]; keys: string[] } => {
    const batch: Pending<I, O>[] = [];
    const later: Pending<I, O>[] = [];
    const taken = new Set<string>();
    for (const pending of waiting) {
      const keys = keysOf ? keysOf(pending.item) : [];
      // An item queued to run alone takes a batch only when it would be the first; nothing joins it.
      const full = batch.length >= maxBatch || (batch.length > 0 && (pending.alone || batch[0].alone));
      if (full || keys.some((key) => taken.has(key) || keysInFlight.has(key))) {
        later.push(pending);
        // Nor may a later item overtake this one on a key they share.
        for (const key of keys) taken.add(key);
        continue;
      }
      for (const key of keys) taken.add(key);
      batch.push(pending);
    }
    waiting = later;
    const keys = keysOf ? batch.flatMap((pending) => keysOf(pending.item)) : [];
    for (const key of keys) keysInFlight.add(key);
    return { batch, keys };
  };

  // `run` may throw synchronously (a bad item): that too rejects instead of escaping.
  const runItems = async (items: I[]): Promise<O[]> => {
    const results = await run(items);
    if (results.length !== items.length) throw new Error(`batch run returned ${results.length} results for ${items.length} items`);
    return results;
  };

  const arm = (pending: Pending<I, O>) => {
    if (maxWait) pending.timer = setTimeout(() => giveUp(pending), maxWait.ms);
  };

  const runBatch = ({ batch, keys }: { batch: Pending<I, O>[]; keys: string[] }) => {
    inFlight += 1;
    for (const pending of batch) clearTimeout(pending.timer);
    Promise.resolve()
      .then(() => runItems(batch.map((pending) => pending.item)))
      .then(
        (results) => batch.forEach((pending, i) => pending.resolve(results[i])),
        (error: unknown) => {
          if (batch.length > 1 && retryAlone?.(error)) {
            // Back to the front of the queue, each to run alone: through maxInFlight like any batch, not all at once
            // (a batch of 200 re-run side by side was 200 concurrent statements against a design of 2). Their keys
            // are released below; being first in line, no later item sharing a key can overtake them.
            for (const pending of batch) {
              pending.alone = true;
              arm(pending);
            }
            waiting = [...batch, ...waiting];
          } else batch.forEach((pending) => pending.reject(error));
        },
      )
      .finally(() => {
        inFlight -= 1;
        for (const key of keys) keysInFlight.delete(key);
        schedule();
      });
  };

  const flush = () => {
    scheduled = false;
    while (inFlight < maxInFlight && waiting.length > 0) {
      const next = takeBatch();
      // Everything waiting collides with a running batch: its end schedules the next flush.
      if (next.batch.length === 0) return;
      runBatch(next);
    }
  };

  // setImmediate: after the poll phase, so every request parsed in this turn joins the batch.
  const schedule = () => {
    if (scheduled || inFlight >= maxInFlight || waiting.length === 0) return;
    scheduled = true;
    setImmediate(flush);
  };

  const giveUp = (pending: Pending<I, O>) => {
    const at = waiting.indexOf(pending);
    if (at < 0) return;
    waiting.splice(at, 1);
    pending.reject(maxWait!.error());
  };

  return (item) =>
    new Promise<O>((resolve, reject) => {
      const pending: Pending<I, O> = { item, resolve, reject };
      arm(pending);
      waiting.push(pending);
      schedule();
    });
}
