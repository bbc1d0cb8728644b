import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Config } from '../config.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { adminRouteDoc } from '../ops/docs.js';
import { enqueue, outboxJobId, publishAfterCommit, type OutboxDeps, type OutboxRow } from '../outbox/producer.js';
import { requireBearer } from '../ops/auth.js';
import type { Payload } from '../queues.js';
import { BATCH_QUEUE, ORDERS_EXPORT_JOB, TRACKING_LINKS_BACKFILL_JOB, USERS_IMPORT_JOB, type BatchJobName } from './jobs.js';
import { EXPORT_CONTENT_TYPES, type ExportFormat } from './orders-export.js';
import { batchDb, batchTrx, findBatchJob, insertBatchJob, readChunks, readImportErrorsCsv } from './repository.js';
import { storeUsersImport, UploadRejectedError } from './import-upload.js';

export interface BatchRoutesOptions extends OutboxDeps {
  config: Config;
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
const JobAcceptedSchema = Type.Object({ jobId: Type.String() });
const errors = (...codes: number[]) => Object.fromEntries(codes.map((code) => [code, ErrorResponseSchema]));

const file = (description: string, mediaTypes: string[]) => ({
  description,
  content: Object.fromEntries(mediaTypes.map((type) => [type, { schema: { type: 'string' } }])),
});

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
};

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
 * `/admin/exports`, `/admin/imports` and `/admin/backfills` (a job's state, events and cancel are
 * src/ops/jobs.routes.ts),
 * behind the same bearer token as the other admin routes (registered only
 * when ADMIN_TOKEN is set).
 */
export const batchRoutes: FastifyPluginAsync<BatchRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(BATCH_ROUTE_DOCS));
  app.addHook('onRequest', requireBearer(deps.adminToken));
  const bdb = batchDb(deps.db);

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
      yield* readImportErrorsCsv(bdb, jobId);
    }
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="import-${jobId}-errors.csv"`)
      .send(Readable.from(lines()));
  });
};
