import t from 'tap';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

// A failover can lose jobs the old primary acknowledged but had not replicated: their outbox rows say
// "published", so the relay's normal pass never looks at them again. Simulated here by removing the job
// from Redis, then dropping the producer connection, as a failover does.
t.test('when the producer connection becomes ready again, recently published jobs lost from Redis are added back, once', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url }));
  const { app, deps } = errand;
  const queue = deps.queues[EMAIL_QUEUE];

  // Delivered normally before the "failover": must not be sent again by the re-add.
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'before@example.com' } })).statusCode, 202);
  await smtp.waitForEmails(1);

  // Paused queue: the job waits in Redis where nothing can pick it up before it is "lost".
  await queue.pause();
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'lost@example.com' } })).statusCode, 202);
  const row = await waitFor(
    async () =>
      (await deps.db.selectFrom('outbox').select(['id', 'published_at']).orderBy('id', 'desc').executeTakeFirstOrThrow()).published_at
        ? true
        : undefined,
    5000,
    'the second job published',
  ).then(() => deps.db.selectFrom('outbox').select('id').orderBy('id', 'desc').executeTakeFirstOrThrow());
  await queue.remove(`outbox-${row.id}`);
  t.notOk(await queue.getJob(`outbox-${row.id}`), 'the job is gone from Redis, its outbox row still says published');

  const reconnected = new Promise((resolve) => deps.redis.once('ready', resolve));
  deps.redis.disconnect(true);
  await reconnected;
  await waitFor(async () => ((await queue.getJob(`outbox-${row.id}`)) ? true : undefined), 10000, 'the lost job added back');

  await queue.resume();
  const emails = await smtp.waitForEmails(2);
  t.same(emails.map((email) => email.to[0]).sort(), ['before@example.com', 'lost@example.com']);
  // The first job was re-added too (a no-op while it is still in Redis); give the worker a moment to prove it sends nothing.
  await waitFor(
    async () => ((await queue.getJobCounts('wait', 'prioritized', 'active')) as Record<string, number>).active === 0 || undefined,
    5000,
    'worker idle',
  );
  t.equal(smtp.received.length, 2, 'no email went out twice');
});
