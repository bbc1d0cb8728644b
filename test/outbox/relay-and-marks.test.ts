import t from 'tap';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../../src/db/schema.js';
import { createLogger } from '../../src/core/logger.js';
import { createPublishedMarks } from '../../src/outbox/published-marks.js';
import { relayOutboxBatch } from '../../src/outbox/relay.js';
import { EMAIL_QUEUE } from '../../src/queues.js';
import {
  captureLogs,
  countingDb as countingDbMatching,
  freePort,
  freshDatabaseUrl,
  startSmtpServer,
  startTestErrand,
  testEnv,
  waitFor,
  type T,
} from '../support/helpers.js';

/** A Kysely that counts the UPDATEs it sends to the outbox. */
const countingDb = (t: T, url: string) => countingDbMatching(t, url, /^update "outbox"/i);

async function insertRows(db: Kysely<Database>, count: number, payload: (i: number) => object = () => ({ userId: '1' })) {
  const rows = await db
    .insertInto('outbox')
    .values(
      Array.from({ length: count }, (_, i) => ({
        queue: EMAIL_QUEUE,
        job_name: 'email-verification',
        payload: JSON.stringify(payload(i)),
        created_at: sql<Date>`now() - interval '1 minute'`,
      })),
    )
    .returning('id')
    .execute();
  return rows.map((row) => row.id);
}

const unpublished = async (db: Kysely<Database>) =>
  (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).orderBy('id').execute()).map((r) => r.id);

t.test('published marks: adds in the same moment become one UPDATE; a full batch is written at once', async (t) => {
  const { db, counter } = countingDb(t, freshDatabaseUrl(t));
  const marks = createPublishedMarks(db, createLogger('silent'));
  const ids = await insertRows(db, 106);

  marks.add([ids[0]]);
  marks.add([ids[1], ids[2]]);
  marks.add([ids[3]]);
  // Marked by the timer (no flush asked for); then wait for that UPDATE's reply too (flush with nothing held adds no UPDATE).
  await waitFor(async () => ((await unpublished(db)).length === 102 ? true : undefined), 10000, 'four rows marked');
  await marks.flush();
  t.equal(counter.matches, 1, 'three adds, one UPDATE');

  // 100 ids (the batch maximum) are written without waiting for the timer; the 101st starts a new batch.
  counter.matches = 0;
  marks.add(ids.slice(4, 104));
  marks.add([ids[104]]);
  await marks.flush();
  t.equal(counter.matches, 2, 'a full batch, then the rest');
  t.same(await unpublished(db), [ids[105]], 'every added row marked, the one never added left');
});

t.test('published marks: a failed UPDATE is logged and left to the relay; flush still resolves', async (t) => {
  const { db } = countingDb(t, freshDatabaseUrl(t));
  const ids = await insertRows(db, 2);
  // A database nobody listens for: the UPDATE cannot be written.
  const broken = countingDb(t, `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`).db;
  const logs = captureLogs();
  const marks = createPublishedMarks(broken, createLogger('warn', logs.stream));
  marks.add(ids);
  await marks.flush();
  t.match(logs.lines(), [{ msg: 'could not mark outbox rows published', rows: 2 }]);
  t.same(await unpublished(db), ids, 'rows stay unpublished: the relay re-adds them under the same job ids');
});

t.test('two relays sharing a backlog publish every row exactly once', async (t) => {
  // The api role runs no relay and no worker: only the two loops below publish.
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const { deps } = errand;
  const ids = await insertRows(deps.db, 60, (i) => ({ userId: String(i + 1) }));
  const drain = async () => {
    let total = 0;
    for (let n = -1; n !== 0; total += n) n = await relayOutboxBatch(deps, { graceMs: 0, batchSize: 7 });
    return total;
  };
  const [first, second] = await Promise.all([drain(), drain()]);
  t.equal(first + second, 60, `each row published by one relay only (${first} + ${second})`);
  t.same(await unpublished(deps.db), []);
  const counts = await deps.queues[EMAIL_QUEUE].getJobCounts();
  t.equal(
    Object.values(counts).reduce((a, b) => a + b, 0),
    60,
    'sixty jobs, none twice',
  );
  const jobIds = (await deps.queues[EMAIL_QUEUE].getJobs(['prioritized', 'waiting'])).map((job) => job.id).sort();
  t.same(jobIds, ids.map((id) => `outbox-${id}`).sort(), 'one job per row, under the row id');
});

t.test('a composer that finds its row gone completes the job without sending', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url }));
  const { deps } = errand;
  const [verification] = await insertRows(deps.db, 1, () => ({ userId: '987654321' }));
  const tracking = await deps.db
    .insertInto('outbox')
    .values({
      queue: EMAIL_QUEUE,
      job_name: 'order-tracking-link',
      payload: JSON.stringify({ orderId: '00000000-0000-4000-8000-000000000000' }),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  for (const id of [verification, tracking.id]) {
    await waitFor(
      async () => {
        const found = await deps.queues[EMAIL_QUEUE].getJob(`outbox-${id}`);
        return found && (await found.getState()) === 'completed' ? found : undefined;
      },
      15000,
      `job outbox-${id} completed`,
    );
  }
  t.pass('both jobs completed: nothing to send is not a failure');
  t.equal(smtp.attempts, 0, 'no email attempted');
  t.same(await deps.db.selectFrom('sent_emails').select('job_id').execute(), [], 'nothing recorded as sent');
});
