import { connect } from 'node:net';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import t from 'tap';
import { jobRoutes } from '../../src/ops/jobs.routes.js';
import { startTestErrand, testEnv, waitFor } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

// Issue 25 item 14: every GET /admin/jobs/:queue/:id/events opened a QueueEvents (a blocking Redis connection) of its
// own, and one whose client left before the stream opened was never closed. Streams now share one per queue.
t.test('job event streams: one Redis connection per queue, none left when clients leave early', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', ADMIN_TOKEN }));
  const { app, deps } = errand;
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  const base = `http://127.0.0.1:${port}`;
  // No worker in the api role: the job stays waiting and its stream stays open.
  const job = await deps.queues.batch.add('orders-export', { format: 'csv' }, { jobId: 'sse-job-1' });
  const path = `/admin/jobs/batch/${job.id}/events`;

  const observer = new Redis(deps.config.REDIS_URL, { lazyConnect: true });
  await observer.connect();
  t.teardown(() => observer.quit());
  // QueueEvents name their connection `<prefix>:<base64 queue>:qe` (BullMQ); the prefix is this file's own.
  const eventReaders = async () => {
    const list = (await observer.client('LIST')) as string;
    return list.split('\n').filter((line) => new RegExp(` name=${deps.config.QUEUE_PREFIX}:\\S*:qe `).test(line)).length;
  };
  const baseline = await eventReaders();
  const backToBaseline = () =>
    waitFor(async () => ((await eventReaders()) === baseline ? true : undefined), 10000, `event reader connections back to ${baseline}`);

  t.test('clients that hang up before the stream opens', async (t) => {
    // The request is sent whole and the socket closed at once: the handler runs for a client that is gone.
    const request = `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${bearer.authorization}\r\n\r\n`;
    await Promise.all(
      Array.from(
        { length: 12 },
        () =>
          new Promise<void>((resolve) => {
            const socket = connect(port, '127.0.0.1', () => socket.end(request));
            socket.on('close', () => resolve());
            socket.on('error', () => resolve());
            socket.resume();
          }),
      ),
    );
    // Let every handler get past its Redis reads (it would open a reader there if it leaked).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await backToBaseline();
    t.equal(await eventReaders(), baseline, 'no event reader connection left behind');
  });

  t.test('clients that leave after the first event', async (t) => {
    const controllers = Array.from({ length: 8 }, () => new AbortController());
    const streams = await Promise.all(
      controllers.map(async (controller) => {
        const res = await fetch(`${base}${path}`, { headers: bearer, signal: controller.signal });
        t.equal(res.status, 200);
        const reader = res.body!.getReader();
        const { value } = await reader.read();
        t.match(Buffer.from(value ?? new Uint8Array()).toString(), /^event: state\n/, 'the current state first');
        return reader;
      }),
    );
    // The shared reader connects (and names its connection) after the first stream has its state: wait for it.
    await waitFor(async () => ((await eventReaders()) > baseline ? true : undefined), 10000, 'the event reader connection');
    t.equal(await eventReaders(), baseline + 1, 'eight open streams of one queue share one event reader');
    for (const controller of controllers) controller.abort();
    await Promise.all(streams.map((reader) => reader.cancel().catch(() => undefined)));
    await backToBaseline();
    t.equal(await eventReaders(), baseline, 'closed when the last client left');
  });

  t.test('beyond the cap: 503 with a message, and a slot again once a stream ends', async (t) => {
    const capped = Fastify();
    await capped.register(jobRoutes, {
      config: deps.config,
      db: deps.db,
      redis: deps.redis,
      workerRedis: deps.workerRedis,
      queues: deps.queues,
      adminToken: ADMIN_TOKEN,
      maxEventStreams: 2,
    });
    await capped.listen({ port: 0, host: '127.0.0.1' });
    t.teardown(() => capped.close());
    const cappedBase = `http://127.0.0.1:${(capped.server.address() as { port: number }).port}`;
    const open = async () => {
      const controller = new AbortController();
      const res = await fetch(`${cappedBase}${path}`, { headers: bearer, signal: controller.signal });
      return { res, controller };
    };
    const first = await open();
    const second = await open();
    t.equal(first.res.status, 200);
    t.equal(second.res.status, 200);
    const third = await open();
    t.equal(third.res.status, 503);
    if (third.res.status === 200) third.controller.abort();
    else t.match(await third.res.json(), { message: 'too many open job event streams (2), try again later' });
    first.controller.abort();
    await first.res.body?.cancel().catch(() => undefined);
    const fourth = await waitFor(
      async () => {
        const attempt = await open();
        if (attempt.res.status === 200) return attempt;
        await attempt.res.text();
        return undefined;
      },
      10000,
      'a stream slot after one client left',
    );
    t.equal(fourth.res.status, 200);
    second.controller.abort();
    fourth.controller.abort();
    await second.res.body?.cancel().catch(() => undefined);
    await fourth.res.body?.cancel().catch(() => undefined);
  });

  t.test('the job routes take the admin routes control-character rule', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/admin/jobs/batch/a%01b', headers: bearer });
    t.equal(res.statusCode, 400);
    t.match(res.json(), { message: 'params/id must not contain control characters' });
  });
});
