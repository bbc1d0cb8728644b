import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { QueueEvents } from 'bullmq';
import type { Config } from '../config.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { adminRouteDoc } from '../ops/docs.js';
import type { RedisClient } from '../core/redis.js';
import { enqueue, outboxJobId, publishAfterCommit, type OutboxDeps, type OutboxRow } from '../outbox/producer.js';
import { requireBearer } from '../ops/auth.js';
import { isQueueName, type Payload, type QueueName, type Queues } from '../queues.js';
import { publishCancelRequest } from './cancel.js';
import { forgetCancellation, recordCancellation } from '../outbox/cancelled.js';
import { BATCH_QUEUE, ORDERS_EXPORT_JOB, TRACKING_LINKS_BACKFILL_JOB, USERS_IMPORT_JOB, type BatchJobName } from './jobs.js';
import { csvField, EXPORT_CONTENT_TYPES, type ExportFormat } from './orders-export.js';
import { batchDb, batchTrx, deleteBatchJob, findBatchJob, insertBatchJob, readChunks, readImportErrors } from './repository.js';
import { storeUsersImport, UploadRejectedError } from './users-import.js';

export interface BatchRoutesOptions extends OutboxDeps {
  config: Config;
  /** Waits for Redis; each event stream's QueueEvents duplicates it for its blocking read. */
  workerRedis: RedisClient;
  adminToken: string;
}

const DateTime = Type.String({ format: 'date-time', maxLength: 64 });
const ExportBodySchema = Type.Object(
  {
    from: Type.Optional(DateTime),
    to: Type.Optional(DateTime),
    status: Type.Optional(Type.Union([Type.Literal('pending'), Type.Literal('paid'), Type.Literal('failed'), Type.Literal('expired')])),
    format: Type.Optional(Type.Union([Type.Literal('csv'), Type.Literal('ndjson')])),
  },
  { additionalProperties: false },
);
const BackfillBodySchema = Type.Object({ since: DateTime }, { additionalProperties: false });
const ImportQuerySchema = Type.Object(
  { sendVerification: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])) },
  { additionalProperties: false },
);
const JobIdParamsSchema = Type.Object({ jobId: Type.String({ minLength: 1, maxLength: 256 }) });
const JobParamsSchema = Type.Object({
  queue: Type.String({ minLength: 1, maxLength: 100 }),
  id: Type.String({ minLength: 1, maxLength: 256 }),
});
const JobAcceptedSchema = Type.Object({ jobId: Type.String() });
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
const BATCH_ROUTE_DOCS: Record<string, RouteDoc> = {
  'POST /admin/exports/orders': adminRouteDoc({
    summary: 'Export orders (CSV or NDJSON) in a batch job',
    examples: { body: { from: '2026-01-01T00:00:00Z', status: 'paid', format: 'csv' } },
    responses: {
      202: 'queued; follow it at /admin/jobs/batch/{jobId}',
      400: 'bad from, to, status or format, or from not before to',
      503: 'database unavailable; nothing queued',
    },
  }),
  'GET /admin/exports/:jobId/file': adminRouteDoc({
    summary: 'Download a finished export (streamed, content-disposition: attachment)',
    examples: { params: { jobId: 'batch-0' } },
    responses: { 200: file('the export file', ['text/csv', 'application/x-ndjson']), 404: 'unknown export, or not finished' },
  }),
  'POST /admin/backfills/tracking-links': adminRouteDoc({
    summary: 'Queue the tracking email of every order paid since then that never had one',
    examples: { body: { since: '2026-01-01T00:00:00Z' } },
    responses: { 202: 'queued', 400: 'since is not a date-time', 503: 'database unavailable; nothing queued' },
  }),
  'POST /admin/imports/users': adminRouteDoc({
    summary: 'Import users from a CSV upload (header row email,name) in a batch job',
    description:
      'The body is `text/csv`; the upload is stored before the answer. `sendVerification=true` queues a verification email per created user.',
    responses: {
      202: 'stored and queued',
      400: 'not text/csv, empty, or no email column',
      413: 'over IMPORT_MAX_BYTES',
      503: 'database unavailable; nothing stored',
    },
  }),
  'GET /admin/imports/:jobId/errors': adminRouteDoc({
    summary: "An import's rejected rows, as CSV `line,reason`",
    examples: { params: { jobId: 'batch-0' } },
    responses: { 200: file('the rejected rows', ['text/csv']), 404: 'unknown import' },
  }),
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

/** Records a batch job and its outbox row in one transaction; published right after commit (the relay covers Redis being away). */
async function enqueueBatchJob<N extends BatchJobName>(
  deps: OutboxDeps,
  jobName: N,
  payload: Payload<typeof BATCH_QUEUE, N>,
): Promise<string> {
  let row: OutboxRow | undefined;
  const jobId = await deps.db.transaction().execute(async (trx) => {
    row = await enqueue(trx, BATCH_QUEUE, jobName, payload);
    const id = outboxJobId(row.id);
    await insertBatchJob(batchTrx(trx), { jobId: id, kind: jobName, params: payload });
    return id;
  });
  await publishAfterCommit(deps, row ? [row] : []);
  return jobId;
}

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
 * `/admin/exports`, `/admin/imports`, `/admin/backfills` and `/admin/jobs`,
 * behind the same bearer token as the other admin routes (registered only
 * when ADMIN_TOKEN is set).
 */
export const batchRoutes: FastifyPluginAsync<BatchRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(BATCH_ROUTE_DOCS));
  app.addHook('onRequest', requireBearer(deps.adminToken));
  const bdb = batchDb(deps.db);
  const redisGuard = async (_request: unknown, reply: FastifyReply) => {
    // Job state lives in Redis; the producer connection fails fast, so say so rather than hang.
    if (deps.redis.status !== 'ready') return sendError(reply, 503, 'redis unavailable, try again later');
  };

  app.post(
    '/admin/exports/orders',
    { schema: { body: ExportBodySchema, response: { 202: JobAcceptedSchema, ...errors(400, 401) } } },
    async (request, reply) => {
      const { from, to, status, format = 'csv' } = request.body;
      if (from && to && Date.parse(from) >= Date.parse(to)) return sendError(reply, 400, 'body/from must be before body/to');
      const jobId = await enqueueBatchJob(deps, ORDERS_EXPORT_JOB, {
        format,
        ...(from ? { from } : {}),
        ...(to ? { to } : {}),
        ...(status ? { status } : {}),
      });
      return reply.code(202).send({ jobId });
    },
  );

  app.get('/admin/exports/:jobId/file', { schema: { params: JobIdParamsSchema } }, async (request, reply) => {
    const { jobId } = request.params;
    const job = await findBatchJob(bdb, jobId);
    if (!job || job.kind !== ORDERS_EXPORT_JOB || !job.finished || job.cancelled)
      return sendError(reply, 404, `no finished export ${jobId}`);
    const format = job.params.format as ExportFormat;
    // One chunk read ahead at most (Readable.from's object-mode default would buffer 16 chunks for a slow client).
    const file = Readable.from(readChunks(bdb, 'batch_export_chunks', jobId), { highWaterMark: 1 });
    return reply
      .type(EXPORT_CONTENT_TYPES[format])
      .header('content-disposition', `attachment; filename="orders-${jobId}.${format}"`)
      .header('content-length', job.bytesDone)
      .send(file);
  });

  app.post(
    '/admin/backfills/tracking-links',
    { schema: { body: BackfillBodySchema, response: { 202: JobAcceptedSchema, ...errors(400, 401) } } },
    async (request, reply) => {
      const jobId = await enqueueBatchJob(deps, TRACKING_LINKS_BACKFILL_JOB, { since: request.body.since });
      return reply.code(202).send({ jobId });
    },
  );

  // The upload route in a scope of its own: its body is a raw stream of any content type (judged in the handler), while every other route keeps the JSON parser.
  await app.register(async (scope: FastifyInstance) => {
    const uploads = scope.withTypeProvider<TypeBoxTypeProvider>();
    uploads.removeAllContentTypeParsers();
    uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    // Without a content type Fastify would answer 415 before any parser runs; the contract says 400 for "not CSV".
    uploads.addHook('onRequest', async (request) => {
      if (!request.headers['content-type']) request.headers['content-type'] = 'application/octet-stream';
    });
    uploads.post(
      '/admin/imports/users',
      {
        bodyLimit: deps.config.IMPORT_MAX_BYTES,
        schema: { querystring: ImportQuerySchema, response: { 202: JobAcceptedSchema, ...errors(400, 401, 413) } },
      },
      async (request, reply) => {
        const contentType = request.headers['content-type'] ?? '';
        if (!/^text\/csv\s*(;|$)/i.test(contentType))
          return sendError(reply.header('connection', 'close'), 400, 'body must be text/csv with a header row holding an email column');
        const declared = Number(request.headers['content-length']);
        if (declared > deps.config.IMPORT_MAX_BYTES) {
          return sendError(reply.header('connection', 'close'), 413, `import body is larger than ${deps.config.IMPORT_MAX_BYTES} bytes`);
        }
        const body = request.body as Readable | undefined;
        if (!body) return sendError(reply, 400, 'CSV body is empty: expected a header row with an email column');
        try {
          const { jobId } = await storeUsersImport(deps, body, {
            maxBytes: deps.config.IMPORT_MAX_BYTES,
            sendVerification: request.query.sendVerification === 'true',
          });
          return reply.code(202).send({ jobId });
        } catch (error) {
          if (error instanceof UploadRejectedError) return sendError(reply.header('connection', 'close'), error.statusCode, error.message);
          throw error;
        }
      },
    );
  });

  app.get('/admin/imports/:jobId/errors', { schema: { params: JobIdParamsSchema } }, async (request, reply) => {
    const { jobId } = request.params;
    const job = await findBatchJob(bdb, jobId);
    if (!job || job.kind !== USERS_IMPORT_JOB || job.cancelled) return sendError(reply, 404, `no import ${jobId}`);
    async function* lines() {
      yield 'line,reason\r\n';
      for await (const page of readImportErrors(bdb, jobId)) yield page.map((e) => `${e.line},${csvField(e.reason)}\r\n`).join('');
    }
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="import-${jobId}-errors.csv"`)
      .send(Readable.from(lines()));
  });

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
