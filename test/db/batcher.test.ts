import t from 'tap';
import { createBatcher } from '../../src/db/batcher.js';

// Pure: no servers. `run` records each batch it is given.
function recordingBatcher(opts: {
  maxBatch?: number;
  maxInFlight?: number;
  keysOf?: (item: string) => string[];
  fail?: (items: string[]) => boolean;
}) {
  const batches: string[][] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  const submit = createBatcher<string, string>({
    maxBatch: opts.maxBatch ?? 100,
    maxInFlight: opts.maxInFlight ?? 1,
    keysOf: opts.keysOf,
    async run(items) {
      batches.push(items);
      inFlight += 1;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight -= 1;
      if (opts.fail?.(items)) throw new Error(`batch ${items.join(',')} failed`);
      return items.map((item) => `done ${item}`);
    },
  });
  return { submit, batches, mostInFlight: () => mostInFlight };
}

t.test('items submitted in one turn share one run; each caller gets its own result', async (t) => {
  const { submit, batches } = recordingBatcher({});
  const results = await Promise.all(['a', 'b', 'c'].map(submit));
  t.same(results, ['done a', 'done b', 'done c']);
  t.same(batches, [['a', 'b', 'c']]);
});

t.test('an idle batcher runs a lone item at once, alone', async (t) => {
  const { submit, batches } = recordingBatcher({});
  t.equal(await submit('x'), 'done x');
  t.equal(await submit('y'), 'done y');
  t.same(batches, [['x'], ['y']]);
});

t.test('items that arrive while batches are in flight wait for the next run; at most maxInFlight run at once', async (t) => {
  const { submit, batches, mostInFlight } = recordingBatcher({ maxInFlight: 1 });
  const first = submit('1');
  await new Promise((resolve) => setImmediate(resolve)); // the first batch is now running
  const later = ['2', '3', '4'].map(submit);
  t.same(await Promise.all([first, ...later]), ['done 1', 'done 2', 'done 3', 'done 4']);
  t.same(batches, [['1'], ['2', '3', '4']]);
  t.equal(mostInFlight(), 1);
});

t.test('maxBatch splits a burst; with room in flight the parts run side by side', async (t) => {
  const { submit, batches, mostInFlight } = recordingBatcher({ maxBatch: 2, maxInFlight: 2 });
  await Promise.all(['a', 'b', 'c', 'd', 'e'].map(submit));
  t.same(batches, [['a', 'b'], ['c', 'd'], ['e']]);
  t.equal(mostInFlight(), 2);
});

t.test('items sharing a key never share a batch; the later one runs next, in order', async (t) => {
  const { submit, batches } = recordingBatcher({ keysOf: (item) => [item.split(':')[0]] });
  const results = await Promise.all(['k1:a', 'k2:b', 'k1:c', 'k3:d', 'k1:e'].map(submit));
  t.same(results, ['done k1:a', 'done k2:b', 'done k1:c', 'done k3:d', 'done k1:e']);
  t.same(batches, [['k1:a', 'k2:b', 'k3:d'], ['k1:c'], ['k1:e']]);
});

t.test('an item waits for the running batch that holds its key, even with room in flight', async (t) => {
  const events: string[] = [];
  const submit = createBatcher<string, string>({
    maxBatch: 100,
    maxInFlight: 3,
    keysOf: (item) => item.split(':')[0].split('+'),
    async run(items) {
      events.push(`start ${items.join(',')}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      events.push(`end ${items.join(',')}`);
      return items;
    },
  });
  await Promise.all(['k1:a', 'k1+k2:b', 'k2:c', 'k3:d'].map(submit));
  t.same(
    events,
    ['start k1:a,k3:d', 'end k1:a,k3:d', 'start k1+k2:b', 'end k1+k2:b', 'start k2:c', 'end k2:c'],
    'k1+k2:b after k1:a has ended, and k2:c (which shares k2 with it) does not overtake it',
  );
});

t.test('a failed run rejects every item of its batch, and only those', async (t) => {
  const { submit } = recordingBatcher({ maxBatch: 2, maxInFlight: 2, fail: (items) => items.includes('bad') });
  const settled = await Promise.allSettled(['ok1', 'bad', 'ok2'].map(submit));
  t.same(
    settled.map((s) => s.status),
    ['rejected', 'rejected', 'fulfilled'],
  );
  t.match((settled[0] as PromiseRejectedResult).reason, { message: 'batch ok1,bad failed' });
  t.equal(await submit('after'), 'done after', 'the batcher goes on after a failure');
});

t.test('a run that throws synchronously rejects its batch instead of escaping', async (t) => {
  const submit = createBatcher<string, string>({
    maxBatch: 10,
    maxInFlight: 1,
    run() {
      throw new Error('sync');
    },
  });
  await t.rejects(submit('x'), { message: 'sync' });
});

t.test('retryAlone: a batch failing with an accepted error is run again item by item; only the culprit fails', async (t) => {
  const runs: string[][] = [];
  const conflict = Object.assign(new Error('deadlock detected'), { code: '40P01' });
  const submit = createBatcher<string, string>({
    maxBatch: 10,
    maxInFlight: 1,
    retryAlone: (error) => (error as { code?: string }).code === '40P01',
    async run(items) {
      runs.push(items);
      if (items.length > 1) throw conflict; // what another transaction's locks did to the shared statement
      if (items[0] === 'bad') throw new Error('bad alone too');
      return items.map((item) => `done ${item}`);
    },
  });
  const settled = await Promise.allSettled(['a', 'bad', 'b'].map(submit));
  t.same(
    settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message)),
    ['done a', 'bad alone too', 'done b'],
  );
  t.same(runs, [['a', 'bad', 'b'], ['a'], ['bad'], ['b']]);
});

t.test('retryAlone refuses the error (an outage): the batch fails at once, with no retries', async (t) => {
  let calls = 0;
  const submit = createBatcher<string, string>({
    maxBatch: 10,
    maxInFlight: 1,
    retryAlone: () => false,
    run() {
      calls += 1;
      return Promise.reject(new Error('connection refused'));
    },
  });
  const settled = await Promise.allSettled(['a', 'b'].map(submit));
  t.same(
    settled.map((s) => s.status),
    ['rejected', 'rejected'],
  );
  t.equal(calls, 1);
});

t.test('a run returning fewer results than items rejects the batch instead of resolving undefined', async (t) => {
  const submit = createBatcher<string, string>({ maxBatch: 10, maxInFlight: 1, run: (items) => Promise.resolve(items.slice(1)) });
  const settled = await Promise.allSettled(['a', 'b'].map(submit));
  t.same(
    settled.map((s) => s.status),
    ['rejected', 'rejected'],
  );
  t.match((settled[0] as PromiseRejectedResult).reason, { message: 'batch run returned 1 results for 2 items' });
});

t.test('maxWait: while the batches in flight hang, a waiting item is rejected in time and never runs later', async (t) => {
  const runs: string[][] = [];
  let release!: () => void;
  const hung = new Promise<void>((resolve) => (release = resolve));
  const submit = createBatcher<string, string>({
    maxBatch: 10,
    maxInFlight: 1,
    maxWait: { ms: 50, error: () => new Error('busy') },
    async run(items) {
      runs.push(items);
      if (items.includes('slow')) await hung;
      return items.map((item) => `done ${item}`);
    },
  });
  const slow = submit('slow');
  await new Promise((resolve) => setImmediate(resolve)); // 'slow' is running (and hangs)
  const started = Date.now();
  await t.rejects(submit('queued'), { message: 'busy' });
  t.ok(Date.now() - started >= 45, 'rejected after about maxWait');
  release();
  t.equal(await slow, 'done slow', 'an item already running is not cut short');
  t.equal(await submit('after'), 'done after');
  t.same(runs, [['slow'], ['after']], 'the item that gave up never ran');
});

t.test("the database's busy error is answered as the database being unavailable (503), a lock conflict is retried alone", async (t) => {
  const { databaseBusyError, isDatabaseUnavailable, isLockConflict } = await import('../../src/core/errors.js');
  t.ok(isDatabaseUnavailable(databaseBusyError()));
  t.notOk(isLockConflict(databaseBusyError()));
  t.ok(isLockConflict(Object.assign(new Error('deadlock detected'), { code: '40P01' })));
  t.ok(isLockConflict(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' })));
  t.notOk(isLockConflict(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })));
});

t.test('retryAlone: the items of a failed batch run again within maxInFlight, not all at once', async (t) => {
  const conflict = Object.assign(new Error('deadlock detected'), { code: '40P01' });
  let inFlight = 0;
  let mostInFlight = 0;
  const aloneRuns: string[] = [];
  const submit = createBatcher<string, string>({
    maxBatch: 100,
    maxInFlight: 2,
    retryAlone: (error) => (error as { code?: string }).code === '40P01',
    async run(items) {
      inFlight += 1;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 2));
      inFlight -= 1;
      if (items.length > 1) throw conflict;
      aloneRuns.push(items[0]);
      return items.map((item) => `done ${item}`);
    },
  });
  const items = Array.from({ length: 40 }, (_, i) => `i${i}`);
  t.same(
    await Promise.all(items.map(submit)),
    items.map((item) => `done ${item}`),
  );
  t.same(aloneRuns, items, 'each item ran alone, in its order');
  t.equal(mostInFlight, 2, 'never more than maxInFlight runs at once (the retries ran 40 side by side)');
});

t.test('retryAlone: an item retried alone keeps its place ahead of a later item with the same key', async (t) => {
  const runs: string[][] = [];
  const submit = createBatcher<string, string>({
    maxBatch: 100,
    maxInFlight: 1,
    keysOf: (item) => [item.split(':')[0]],
    retryAlone: () => true,
    async run(items) {
      runs.push(items);
      await new Promise((resolve) => setTimeout(resolve, 2));
      if (items.length > 1) throw new Error('conflict');
      return items;
    },
  });
  const first = ['k1:a', 'k2:b'].map(submit);
  await new Promise((resolve) => setImmediate(resolve)); // the batch is running
  const later = submit('k1:c');
  await Promise.all([...first, later]);
  t.same(runs, [['k1:a', 'k2:b'], ['k1:a'], ['k2:b'], ['k1:c']]);
});

t.test('shared statements: only a deadlock or serialization failure is retried alone, never a statement timeout', async (t) => {
  const { createStatementBatcher, shouldRetryAlone } = await import('../../src/db/batch.js');
  t.ok(shouldRetryAlone(Object.assign(new Error('deadlock detected'), { code: '40P01' })));
  t.ok(shouldRetryAlone(Object.assign(new Error('could not serialize access'), { code: '40001' })));
  t.notOk(shouldRetryAlone(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' })));
  t.notOk(shouldRetryAlone(Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' })));
  t.notOk(shouldRetryAlone(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })));
  t.notOk(shouldRetryAlone(undefined));

  for (const [code, expectedRuns] of [
    ['57014', 1],
    ['40P01', 1 + 50],
  ] as const) {
    let runs = 0;
    let inFlight = 0;
    let mostInFlight = 0;
    const submit = createStatementBatcher<number, number>(
      { batching: true },
      {
        maxBatch: 500,
        async run(items) {
          runs += 1;
          inFlight += 1;
          mostInFlight = Math.max(mostInFlight, inFlight);
          await new Promise((resolve) => setTimeout(resolve, 2));
          inFlight -= 1;
          if (items.length > 1) throw Object.assign(new Error(`failed with ${code}`), { code });
          return items;
        },
      },
    );
    await Promise.allSettled(Array.from({ length: 50 }, (_, i) => submit(i)));
    t.equal(runs, expectedRuns, `${code}: statements run for a failed batch of 50`);
    t.ok(mostInFlight <= 2, `${code}: at most 2 statements at once (saw ${mostInFlight})`);
  }
});
