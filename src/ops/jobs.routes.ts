import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { QueueEvents } from 'bullmq';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Config } from '../config.js';
import type { Db } from '../core/db.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import type { RedisClient } from '../core/redis.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { SafeString } from '../core/schemas.js';
import { publishCancelRequest } from '../batch/cancel.js';
import { BATCH_QUEUE } from '../batch/jobs.js';
import { batchDb, deleteBatchJob } from '../batch/repository.js';
import { isQueueName, type QueueName, type Queues } from '../queues.js';
import { requireBearer } from './auth.js';
import { adminRouteDoc } from './docs.js';

export interface JobRoutesOptions {
  config: Config;
  db: Db;
  /** Fail-fast producer connection: job state reads and the cancel message. */
  redis: RedisClient;
  /** Waits for Redis; each event stream's QueueEvents duplicates it for its blocking read. */
  workerRedis: RedisClient;
  queues: Queues;
  adminToken: string;
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

  // Open event streams, ended before the server closes (a stream never goes idle by itself).
  const openStreams = new Set<() => Promise<void>>();
  app.addHook('preClose', async () => {
    await Promise.all([...openStreams].map((end) => end()));
  });

  app.get('/admin/jobs/:queue/:id/events', { schema: { params: JobParamsSchema }, preHandler: redisGuard }, async (request, reply) => {
    const { queue: name, id } = request.params;
    if (!isQueueName(name)) return sendError(reply, 404, `unknown queue ${name}`);
    const queue = deps.queues[name];
    if (!(await queue.getJob(id))) return sendError(reply, 404, `no job ${id} in queue ${name}`);

    // Read the events stream from Redis's "now" before reading the job's state: nothing between the two is missed.
    const [seconds, micros] = await deps.redis.time();
    const events = new QueueEvents(name, {
      connection: deps.workerRedis,
      prefix: deps.config.QUEUE_PREFIX,
      lastEventId: `${Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)}-0`,
    });
    events.on('error', (err) => request.log.warn({ err, queue: name, jobId: id }, 'job event stream error'));

    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    let ended = false;
    const send = (event: string, data: unknown) => {
      if (!ended) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const heartbeat = setInterval(() => raw.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS);
    const end = async () => {
      if (ended) return;
      ended = true;
      openStreams.delete(end);
      clearInterval(heartbeat);
      raw.end();
      await events.close().catch(() => {});
    };
    openStreams.add(end);
    // The response's close: the client went away (or the stream ended).
    raw.on('close', () => void end());

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
    events.on('progress', ({ jobId, data }) => {
      if (jobId === id) send('progress', data);
    });
    events.on('completed', ({ jobId }) => {
      if (jobId === id) void finish();
    });
    // A failed attempt that will be retried leaves the job delayed or waiting: finish() keeps the stream open then.
    events.on('failed', ({ jobId }) => {
      if (jobId === id) void finish();
    });
    events.on('removed', ({ jobId }) => {
      if (jobId === id) void finish();
    });

    const view = await jobView(queue, id);
    if (!view) {
      send('removed', { id });
      return end();
    }
    send('state', view);
    if (FINISHED_STATES.has(view.state)) await finish();
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
      if (name !== BATCH_QUEUE) return sendError(reply, 409, `job ${id} is running and queue ${name} cannot stop a running job`);
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
