import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Config } from '../config.js';
import type { Db } from '../db/schema.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import type { RedisClient } from '../core/redis.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { SafeString } from '../core/schemas.js';
import { publishCancelRequest } from '../batch/cancel.js';
import { forgetCancellation, recordCancellation } from '../db/cancelled-jobs.js';
import { BATCH_QUEUE } from '../batch/jobs.js';
import { batchDb, deleteBatchJob } from '../batch/repository.js';
import { isQueueName, type QueueName, type Queues } from '../queues.js';
import { requireBearer } from './auth.js';
import { adminRouteDoc } from './docs.js';
import { createJobEventHub } from './job-events.js';

export interface JobRoutesOptions {
  config: Config;
  db: Db;
  /** Fail-fast producer connection: job state reads and the cancel message. */
  redis: RedisClient;
  /** Waits for Redis; each event stream's QueueEvents duplicates it for its blocking read. */
  workerRedis: RedisClient;
  queues: Queues;
  adminToken: string;
  /** Event streams open at once in this process; one more gets 503. */
  maxEventStreams?: number;
}

// The same control-character rule as every admin route's parameters (SafeString).
export const JobParamsSchema = Type.Object({
  queue: SafeString({ minLength: 1, maxLength: 100, examples: ['batch'] }),
  id: SafeString({ minLength: 1, maxLength: 256, examples: ['batch-0'] }),
});
const CancelAcceptedSchema = Type.Object({
  jobId: Type.String(),
  status: Type.Union([Type.Literal('removed'), Type.Literal('cancelling')]),
});
// The job as the contract shows it; serialised through this schema, so nothing else (never its data) can slip out.
const JobViewSchema = Type.Object({
  id: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  state: Type.String(),
  progress: Type.Unknown(),
  result: Type.Unknown(),
  failedReason: Type.Union([Type.String(), Type.Null()]),
  attemptsMade: Type.Integer(),
  createdAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
});
const errors = (...codes: number[]) => Object.fromEntries(codes.map((code) => [code, ErrorResponseSchema]));

const file = (description: string, mediaTypes: string[]) => ({
  description,
  content: Object.fromEntries(mediaTypes.map((type) => [type, { schema: { type: 'string' } }])),
});
const JOB_EXAMPLE = { params: { queue: 'batch', id: 'batch-0' } };

// For GET /docs/openapi.json: what each route answers, beyond its schemas.
const JOB_ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /admin/jobs/:queue/:id': adminRouteDoc({
    summary: "A job's state, progress and result (never its data)",
    examples: JOB_EXAMPLE,
    responses: { 200: 'the job', 404: 'unknown queue or job', 503: 'Redis unavailable, try again later' },
  }),
  'GET /admin/jobs/:queue/:id/events': adminRouteDoc({
    summary: "A job's events as Server-Sent Events until it ends",
    description: 'The current state first, then `progress`, `completed` and `failed` events.',
    examples: JOB_EXAMPLE,
    responses: {
      200: file('text/event-stream', ['text/event-stream']),
      404: 'unknown queue or job',
      503: 'Redis unavailable, try again later',
    },
  }),
  'POST /admin/jobs/:queue/:id/cancel': adminRouteDoc({
    summary: 'Cancel a job: a waiting one is removed, a running batch job stops at its next checkpoint',
    examples: JOB_EXAMPLE,
    responses: {
      202: '`removed` or `cancelling`',
      404: 'unknown queue or job',
      409: 'already finished, or running in a queue that cannot stop it',
      503: 'Redis unavailable, try again later',
    },
  }),
};

const FINISHED_STATES = new Set(['completed', 'failed']);
const REMOVABLE_STATES = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children', 'paused']);
const SSE_HEARTBEAT_MS = 15_000;
/** Streams share a Redis connection per queue; each still holds a socket and a timer. */
export const MAX_EVENT_STREAMS = 200;

/**
 * What the job routes show of a job: never its data. The state is read
 * before the job hash, so a finished state always comes with its result.
 */
async function jobView(queue: Queues[QueueName], id: string) {
  const state = await queue.getJobState(id);
  const job = await queue.getJob(id);
  if (!job) return undefined;
  return {
    id: job.id ?? null,
    name: job.name,
    state,
    progress: job.progress ?? null,
    result: (job.returnvalue as unknown) ?? null,
    failedReason: job.failedReason ?? null,
    attemptsMade: job.attemptsMade,
    createdAt: new Date(job.timestamp).toISOString(),
    finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
  };
}

/**
 * `/admin/jobs/:queue/:id` (state), `…/events` (Server-Sent Events) and `…/cancel`, for every queue, behind the
 * same bearer token as the other admin routes (registered only when ADMIN_TOKEN is set).
 */
export const jobRoutes: FastifyPluginAsync<JobRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(JOB_ROUTE_DOCS));
  app.addHook('onRequest', requireBearer(deps.adminToken));
  const bdb = batchDb(deps.db);
  const redisGuard = async (_request: unknown, reply: FastifyReply) => {
    // Job state lives in Redis; the producer connection fails fast, so say so rather than hang.
    if (deps.redis.status !== 'ready') return sendError(reply, 503, 'redis unavailable, try again later');
  };

  app.get(
    '/admin/jobs/:queue/:id',
    { schema: { params: JobParamsSchema, response: { 200: JobViewSchema, ...errors(401, 404, 503) } }, preHandler: redisGuard },
    async (request, reply) => {
      const { queue: name, id } = request.params;
      if (!isQueueName(name)) return sendError(reply, 404, `unknown queue ${name}`);
      const view = await jobView(deps.queues[name], id);
      if (!view) return sendError(reply, 404, `no job ${id} in queue ${name}`);
      return view;
    },
  );

  // One QueueEvents per queue for every open stream (not one Redis connection per client), and a cap on streams.
  const hub = createJobEventHub({ connection: deps.workerRedis, redis: deps.redis, prefix: deps.config.QUEUE_PREFIX, log: app.log });
  const maxStreams = deps.maxEventStreams ?? MAX_EVENT_STREAMS;
  // Open event streams, ended before the server closes (a stream never goes idle by itself).
  const openStreams = new Set<() => Promise<void>>();
  app.addHook('preClose', async () => {
    await Promise.all([...openStreams].map((end) => end()));
    await hub.close();
  });

  app.get('/admin/jobs/:queue/:id/events', { schema: { params: JobParamsSchema }, preHandler: redisGuard }, async (request, reply) => {
    const { queue: name, id } = request.params;
    if (!isQueueName(name)) return sendError(reply, 404, `unknown queue ${name}`);
    if (openStreams.size >= maxStreams)
      return sendError(reply.header('retry-after', '5'), 503, `too many open job event streams (${maxStreams}), try again later`);
    const queue = deps.queues[name];
    let ended = false;
    const raw = reply.raw;
    let heartbeat: NodeJS.Timeout | undefined;
    let unsubscribe: (() => Promise<void>) | undefined;
    const end = async () => {
      if (ended) return;
      ended = true;
      openStreams.delete(end);
      clearInterval(heartbeat);
      if (reply.sent) raw.end();
      await unsubscribe?.();
    };
    // Counted (and closed on a client that leaves) from here on, also while the job and the subscription are read:
    // a client gone before the stream opens must not leave a reader behind.
    openStreams.add(end);
    raw.on('close', () => void end());
    const gone = () => ended || raw.destroyed || request.raw.socket.destroyed;

    try {
      if (!(await queue.getJob(id))) {
        await end();
        return sendError(reply, 404, `no job ${id} in queue ${name}`);
      }
      const send = (event: string, data: unknown) => {
        if (!ended) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const finish = async () => {
        const view = await jobView(queue, id);
        if (!view) {
          send('removed', { id });
          return end();
        }
        if (view.state === 'completed') send('completed', { id, result: view.result });
        else if (view.state === 'failed') send('failed', { id, failedReason: view.failedReason, attemptsMade: view.attemptsMade });
        else return;
        await end();
      };
      // Subscribe before reading the job's state: nothing between the two is missed.
      // A failed attempt that will be retried leaves the job delayed or waiting: finish() keeps the stream open then.
      const leave = await hub.subscribe(name, id, (event) => {
        if (event.kind === 'progress') send('progress', event.data);
        else void finish();
      });
      unsubscribe = leave;
      if (gone()) {
        // The client left while the subscription opened: end() may already have run without it.
        await end();
        await leave();
        reply.hijack();
        return;
      }

      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      heartbeat = setInterval(() => raw.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS);
      const view = await jobView(queue, id);
      if (!view) {
        send('removed', { id });
        return end();
      }
      send('state', view);
      if (FINISHED_STATES.has(view.state)) await finish();
    } catch (error) {
      await end();
      throw error;
    }
  });

  app.post(
    '/admin/jobs/:queue/:id/cancel',
    { schema: { params: JobParamsSchema, response: { 202: CancelAcceptedSchema, ...errors(401, 404, 409, 503) } }, preHandler: redisGuard },
    async (request, reply) => {
      const { queue: name, id } = request.params;
      if (!isQueueName(name)) return sendError(reply, 404, `unknown queue ${name}`);
      const job = await deps.queues[name].getJob(id);
      if (!job) return sendError(reply, 404, `no job ${id} in queue ${name}`);
      const state = await job.getState();
      if (FINISHED_STATES.has(state))
        return sendError(reply, 409, `job ${id} has already ${state === 'completed' ? 'completed' : 'failed'}`);

      // Durable first: the relay, the re-publish after a reconnect and the workers read it (cancel sticks).
      await recordCancellation(deps.db, name, id);
      if (REMOVABLE_STATES.has(state)) {
        try {
          await job.remove();
          if (name === BATCH_QUEUE) await deleteBatchJob(bdb, id);
          request.log.info({ queue: name, jobId: id, event: 'removed' }, 'waiting job cancelled');
          return reply.code(202).send({ jobId: id, status: 'removed' as const });
        } catch {
          // A worker took it meanwhile (it is locked): stop it as a running job.
        }
      }
      if (name !== BATCH_QUEUE) {
        await forgetCancellation(deps.db, name, id); // it runs to its end: a retry of it is not cancelled either
        return sendError(reply, 409, `job ${id} is running and queue ${name} cannot stop a running job`);
      }
      // Durable first (the next checkpoint refuses to commit), then the message that aborts it at once wherever it runs.
      await bdb
        .insertInto('batch_jobs')
        .values({ job_id: id, kind: job.name, cancel_requested_at: new Date() })
        .onConflict((oc) =>
          oc.column('job_id').doUpdateSet({
            cancel_requested_at: (eb) => eb.fn.coalesce('batch_jobs.cancel_requested_at', eb.ref('excluded.cancel_requested_at')),
          }),
        )
        .execute();
      await publishCancelRequest(deps.redis, deps.config.QUEUE_PREFIX, name, id);
      request.log.info({ queue: name, jobId: id, event: 'cancel-requested' }, 'running job cancel requested');
      return reply.code(202).send({ jobId: id, status: 'cancelling' as const });
    },
  );
};
