import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type TSchema } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Config } from '../config.js';
import { QUEUE_NAMES, isQueueName, type Queues } from '../queues.js';
import { enqueuePaymentsSweep } from '../reconcile/jobs.js';
import { sendError } from '../core/errors.js';
import { SafeString } from '../core/schemas.js';
import { refuseFraming } from './board.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { requireBearer } from './auth.js';
import { adminRouteDoc } from './docs.js';

export interface AdminRoutesOptions {
  config: Config;
  redis: RedisClient;
  queues: Queues;
  adminToken: string;
}

const QueueParamsSchema = Type.Object({ queue: SafeString({ minLength: 1, maxLength: 100, examples: ['email'] }) });
const JobParamsSchema = Type.Object({ queue: SafeString({ minLength: 1, maxLength: 100, examples: ['email'] }), id: SafeString({ minLength: 1, maxLength: 256, examples: ['1'] }) });
// Query strings are strings, and the app's Ajv does not coerce: digits, range-checked in the handler.
const FailedQuerySchema = Type.Object(
  {
    start: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
  },
  { additionalProperties: false },
);
const MAX_FAILED_PAGE = 1000;

const nullable = (schema: TSchema) => Type.Union([schema, Type.Null()]);
const QueuesAnswerSchema = Type.Object(
  {
    queues: Type.Array(
      Type.Object({
        name: Type.String(),
        counts: Type.Record(Type.String(), Type.Integer(), { description: 'jobs per BullMQ state (waiting, active, delayed, prioritized, completed, failed, …)' }),
        schedulers: Type.Array(
          Type.Object({
            id: Type.String(),
            name: Type.String(),
            pattern: nullable(Type.String()),
            every: nullable(Type.Number()),
            tz: nullable(Type.String()),
            next: nullable(Type.Number({ description: 'next run, ms since the epoch' })),
          }),
        ),
      }),
    ),
  },
  { description: 'every queue, with its job counts and job schedulers' },
);
const FailedJobsAnswerSchema = Type.Object(
  {
    queue: Type.String(),
    total: Type.Integer(),
    jobs: Type.Array(
      Type.Object({
        id: nullable(Type.String()),
        name: Type.String(),
        reason: nullable(Type.String()),
        attempts: Type.Integer(),
        time: Type.String({ description: 'when it failed (ISO 8601)' }),
        failedReason: nullable(Type.String()),
        attemptsMade: Type.Integer(),
        timestamp: Type.Number(),
        processedOn: nullable(Type.Number()),
        finishedOn: nullable(Type.Number()),
      }),
    ),
  },
  { description: "a page of the queue's failed jobs, newest first; never their data" },
);

/** Every route here: bearer token, 401 without it, 503 while Redis is away (the preHandler below). */
function adminDoc(doc: Omit<RouteDoc, 'tags' | 'security'>): RouteDoc {
  return adminRouteDoc({ ...doc, responses: { ...doc.responses, 503: 'Redis unavailable, try again later' } });
}

// For GET /docs/openapi.json: what each route answers, beyond its schemas.
const ADMIN_ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /admin/queues': adminDoc({ summary: 'Job counts per state and the job schedulers of every queue', responses: { 200: QueuesAnswerSchema } }),
  'GET /admin/queues/:queue/failed': adminDoc({
    summary: "A queue's failed jobs",
    responses: { 200: FailedJobsAnswerSchema, 400: `start or limit not digits, or limit outside 1–${MAX_FAILED_PAGE}`, 404: 'unknown queue' },
  }),
  'POST /admin/queues/:queue/jobs/:id/retry': adminDoc({
    summary: 'Retry a failed job, with a fresh set of attempts',
    responses: {
      200: Type.Object({ queue: Type.String(), jobId: Type.String(), status: Type.Literal('retried') }, { description: 'the job is waiting again' }),
      404: 'unknown queue, unknown job, or a job that is not failed',
    },
  }),
  'POST /admin/sweeps': adminDoc({
    summary: 'Queue a one-off payments sweep (the configured window and limit)',
    responses: { 202: Type.Object({ jobId: Type.String() }, { description: 'queued' }) },
  }),
};

function notFound(reply: FastifyReply, message: string) {
  return sendError(reply, 404, message);
}

/** `/admin/*` behind `Authorization: Bearer $ADMIN_TOKEN`. Registered only when ADMIN_TOKEN is set. */
export const adminRoutes: FastifyPluginAsync<AdminRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRequest', refuseFraming);
  app.addHook('onRoute', describeRoutes(ADMIN_ROUTE_DOCS));
  app.addHook('onRequest', requireBearer(deps.adminToken));
  // Queue reads go over the fail-fast producer connection: answer 503 rather than wait for Redis.
  app.addHook('preHandler', async (_request, reply) => {
    if (deps.redis.status !== 'ready') {
      return sendError(reply, 503, 'redis unavailable, try again later');
    }
  });

  app.get('/admin/queues', async () => {
    const queues = await Promise.all(
      QUEUE_NAMES.map(async (name) => {
        const queue = deps.queues[name];
        const [counts, schedulers] = await Promise.all([queue.getJobCounts(), queue.getJobSchedulers(0, -1, true)]);
        return {
          name,
          counts,
          // The template's data is left out on purpose: it may carry payloads.
          schedulers: schedulers.map((s) => ({ id: s.key, name: s.name, pattern: s.pattern ?? null, every: s.every ?? null, tz: s.tz ?? null, next: s.next ?? null })),
        };
      }),
    );
    return { queues };
  });

  app.get('/admin/queues/:queue/failed', { schema: { params: QueueParamsSchema, querystring: FailedQuerySchema } }, async (request, reply) => {
    const { queue: name } = request.params;
    if (!isQueueName(name)) return notFound(reply, `unknown queue ${name}`);
    const queue = deps.queues[name];
    const start = Number(request.query.start ?? 0);
    const limit = Number(request.query.limit ?? 100);
    if (limit < 1 || limit > MAX_FAILED_PAGE) {
      return sendError(reply, 400, `querystring/limit must be between 1 and ${MAX_FAILED_PAGE}`);
    }
    const [total, jobs] = await Promise.all([queue.getFailedCount(), queue.getFailed(start, start + limit - 1)]);
    return {
      queue: name,
      total,
      // Never job.data: payloads stay in Redis.
      jobs: jobs.filter(Boolean).map((job) => ({
        // The contract's fields: id, name, reason, attempts, time (when it failed)...
        id: job.id ?? null,
        name: job.name,
        reason: job.failedReason ?? null,
        attempts: job.attemptsMade,
        time: new Date(job.finishedOn ?? job.timestamp).toISOString(),
        // ...and BullMQ's own names, for operators who know them.
        failedReason: job.failedReason ?? null,
        attemptsMade: job.attemptsMade,
        timestamp: job.timestamp,
        processedOn: job.processedOn ?? null,
        finishedOn: job.finishedOn ?? null,
      })),
    };
  });

  app.post('/admin/queues/:queue/jobs/:id/retry', { schema: { params: JobParamsSchema } }, async (request, reply) => {
    const { queue: name, id } = request.params;
    if (!isQueueName(name)) return notFound(reply, `unknown queue ${name}`);
    const job = await deps.queues[name].getJob(id);
    if (!job) return notFound(reply, `no job ${id} in queue ${name}`);
    const state = await job.getState();
    // The contract knows 200 and 404 here: a job that is not failed is not a failed job to retry.
    if (state !== 'failed') return notFound(reply, `job ${id} in queue ${name} is ${state}, not failed`);
    // A manual retry gets a fresh set of attempts.
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    return { queue: name, jobId: id, status: 'retried' };
  });

  app.post('/admin/sweeps', async (_request, reply) => {
    // The same one-off job as `npm run sweep -- --enqueue`, with the configured window and batch.
    const jobId = await enqueuePaymentsSweep(deps.queues, { windowHours: deps.config.PAYMENTS_RECONCILE_WINDOW_HOURS, limit: deps.config.PAYMENTS_RECONCILE_LIMIT });
    return reply.code(202).send({ jobId });
  });
};
