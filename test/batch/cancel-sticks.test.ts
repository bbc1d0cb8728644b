import t from 'tap';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { BATCH_QUEUE } from '../../src/batch/jobs.js';
import { startPrivateRedis, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

t.test('a cancelled waiting export stays cancelled across a Redis reconnect (re-publish) and never runs', async (t) => {
  const redis = await startPrivateRedis(t);
  const admin = new Redis(redis.url);
  t.teardown(() => admin.disconnect());
  const errand = await startTestErrand(t, testEnv(t, { REDIS_URL: redis.url, ADMIN_TOKEN, LOG_LEVEL: 'info' }));
  const { app, deps } = errand;
  const queue = deps.queues[BATCH_QUEUE];
  // Paused so the export waits in the queue to be cancelled; resumed below to show it never runs.
  await queue.pause();

  const created = await app.inject({ method: 'POST', url: '/admin/exports/orders', headers: bearer, payload: { format: 'csv' } });
  t.equal(created.statusCode, 202);
  const { jobId } = created.json<{ jobId: string }>();
  await waitFor(async () => ['waiting', 'paused'].includes(await queue.getJobState(jobId)) || undefined, 10000, 'the export waiting');
  await waitFor(
    async () => (await deps.db.selectFrom('outbox').select('published_at').executeTakeFirst())?.published_at ?? undefined,
    10000,
    'its outbox row marked published',
  );

  const cancel = await app.inject({ method: 'POST', url: `/admin/jobs/batch/${jobId}/cancel`, headers: bearer });
  t.equal(cancel.statusCode, 202);
  t.equal(cancel.json<{ status: string }>().status, 'removed');
  t.notOk(await queue.getJob(jobId), 'removed from Redis');

  // Every client connection dropped: errand's producer reconnects, and on `ready` the relay re-adds the rows
  // published in the last minute, before its next poll.
  const readyAgain = new Promise((resolve) => deps.redis.once('ready', resolve));
  await admin.call('CLIENT', 'KILL', 'TYPE', 'normal');
  await readyAgain;
  // The re-publish runs before the relay's next poll (interval 100 ms): a second ~ten polls later it has run.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.notOk(await queue.getJob(jobId).catch(() => undefined), 'the cancelled export was not added again');

  await queue.resume();
  // Given a worker, a re-added export would finish in well under a second (no orders to export).
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const job = await queue.getJob(jobId);
  t.notOk(job && (await job.getState()) === 'completed', 'the cancelled export never ran');
  const { rows } = await sql<{ finished_at: Date | null }>`select finished_at from batch_jobs where job_id = ${jobId}`.execute(deps.db);
  t.notOk(rows[0]?.finished_at, 'no export was produced');

  // A failover that lost the removal brings the job back as it was: the worker fails it, unrun.
  await queue.add('orders-export', { format: 'csv' }, { jobId });
  const failed = await waitFor(
    // The state first, then the job: a job read before it failed would carry no failedReason (seen under load).
    async () => ((await queue.getJobState(jobId)) === 'failed' ? queue.getJob(jobId) : undefined),
    10000,
    'the re-added export failed',
  );
  t.equal(failed.failedReason, 'cancelled', 'failed with reason cancelled');
  const again = await sql<{ finished_at: Date | null }>`select finished_at from batch_jobs where job_id = ${jobId}`.execute(deps.db);
  t.notOk(again.rows[0]?.finished_at, 'and it did not run');
});
