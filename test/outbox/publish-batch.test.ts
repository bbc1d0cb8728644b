import t from 'tap';
import type { Redis } from 'ioredis';
import { outboxJobId, publishAfterCommit, type OutboxRow } from '../../src/outbox/producer.js';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startTestErrand, testEnv, type T } from '../support/helpers.js';

// ROLE=api: no worker takes the jobs, so they stay in Redis to be looked at.
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { deps } = errand;
const queue = deps.queues[EMAIL_QUEUE];

async function outboxRows(count: number): Promise<OutboxRow[]> {
  return deps.db
    .insertInto('outbox')
    .values(
      Array.from({ length: count }, (_, i) => ({
        queue: EMAIL_QUEUE,
        job_name: 'email-verification',
        payload: JSON.stringify({ userId: String(i + 1) }),
      })),
    )
    .returning(['id', 'queue', 'job_name', 'payload'])
    .execute();
}

const unpublished = async (ids: string[]) =>
  (await deps.db.selectFrom('outbox').select('id').where('id', 'in', ids).where('published_at', 'is', null).execute()).map((r) => r.id);

/** Counts the writes on errand's producer connection to Redis (each one a round trip's worth of commands). */
function countSocketWrites(t: T): { writes: number } {
  const socket = (deps.redis as Redis).stream;
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  const counter = { writes: 0 };
  // An own property over the socket's inherited write; deleting it restores the original.
  socket.write = (...args: unknown[]) => {
    counter.writes += 1;
    return write(...args);
  };
  t.teardown(() => void Reflect.deleteProperty(socket, 'write'));
  return counter;
}

t.test('rows published in the same moment reach Redis in one write; a row naming an unknown queue fails alone', async (t) => {
  const rows = await outboxRows(20);
  const unknown: OutboxRow = { id: '999999999', queue: 'no-such-queue', job_name: 'email-verification', payload: {} };
  const counter = countSocketWrites(t);
  // As concurrent requests do: each publishes its own row right after its commit.
  await Promise.all([...rows, unknown].map((row) => publishAfterCommit(deps, [row])));
  t.equal(counter.writes, 1, 'twenty jobs, one write');

  for (const row of rows) {
    const job = await queue.getJob(outboxJobId(row.id));
    t.same(job?.data, row.payload, `row ${row.id} is in Redis with its payload`);
  }
  const deferred = errand.logs.lines().filter((line) => line.msg === 'outbox publish deferred to relay');
  t.match(deferred, [{ outboxId: unknown.id, queue: 'no-such-queue' }], 'only the unknown-queue row is deferred');
  t.equal(deferred.length, 1);
  await deps.publishedMarks.flush();
  t.same(await unpublished(rows.map((r) => r.id)), [], 'every published row is marked');
});

t.test('a row published alone reaches Redis at once, in its own write', async (t) => {
  const [row] = await outboxRows(1);
  const counter = countSocketWrites(t);
  await publishAfterCommit(deps, [row]);
  t.equal(counter.writes, 1);
  t.ok(await queue.getJob(outboxJobId(row.id)), 'in Redis');
});
