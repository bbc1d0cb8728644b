import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Db } from '../db/schema.js';
import { sendError } from '../core/errors.js';
import { SafeString } from '../core/schemas.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import {
  decodeCursor,
  deleteSuppression,
  getSuppression,
  listSuppressions,
  putSuppression,
  SUPPRESSION_REASONS,
  type SuppressionItem,
} from '../db/suppressions.js';
import { requireBearer } from './auth.js';
import { refuseFraming } from './board.js';
import { adminRouteDoc } from './docs.js';

export interface SuppressionRoutesOptions {
  db: Db;
  adminToken: string;
}

const MAX_PAGE = 1000;
const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+$/;

const ItemSchema = Type.Object({
  email: Type.String({ description: 'lower-cased' }),
  reason: Type.Unsafe<SuppressionItem['reason']>({ type: 'string', enum: [...SUPPRESSION_REASONS] }),
  source: Type.String({ description: 'the provider whose event suppressed it, or admin' }),
  createdAt: Type.String({ format: 'date-time' }),
});
const PageSchema = Type.Object(
  { items: Type.Array(ItemSchema), nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'null on the last page' }) },
  { description: 'suppressed addresses, newest first' },
);
const ListQuerySchema = Type.Object(
  {
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: `1–${MAX_PAGE}, default 100` })),
    cursor: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,1000}$', description: 'nextCursor of the previous page' })),
  },
  { additionalProperties: false },
);
const EmailParamsSchema = Type.Object({ email: SafeString({ minLength: 3, maxLength: 320, examples: ['someone@example.com'] }) });

const DOCS: Record<string, RouteDoc> = {
  'GET /admin/suppressions': adminRouteDoc({
    summary: 'Suppressed addresses, newest first',
    responses: { 200: PageSchema, 400: `limit outside 1–${MAX_PAGE}, or a cursor this route did not give` },
  }),
  'GET /admin/suppressions/:email': adminRouteDoc({
    summary: 'One suppressed address (matched without regard to case)',
    responses: { 200: Type.Object(ItemSchema.properties, { description: 'suppressed' }), 404: 'not suppressed' },
  }),
  'PUT /admin/suppressions/:email': adminRouteDoc({
    summary: 'Suppress an address by hand (reason manual); one already suppressed keeps its reason',
    responses: { 200: Type.Object(ItemSchema.properties, { description: 'suppressed' }), 400: 'not an email address' },
  }),
  'DELETE /admin/suppressions/:email': adminRouteDoc({
    summary: 'Lift a suppression: errand may email the address again, and its soft-bounce count starts afresh',
    responses: { 204: Type.Null({ description: 'lifted' }), 404: 'not suppressed' },
  }),
};

const toJson = (item: SuppressionItem) => ({ ...item, createdAt: item.createdAt.toISOString() });

/** `/admin/suppressions` behind `Authorization: Bearer $ADMIN_TOKEN`; registered only when ADMIN_TOKEN is set. */
export const suppressionRoutes: FastifyPluginAsync<SuppressionRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRequest', refuseFraming);
  app.addHook('onRoute', describeRoutes(DOCS));
  app.addHook('onRequest', requireBearer(deps.adminToken));

  app.get('/admin/suppressions', { schema: { querystring: ListQuerySchema } }, async (request, reply) => {
    const limit = Number(request.query.limit ?? 100);
    if (limit < 1 || limit > MAX_PAGE) return sendError(reply, 400, `querystring/limit must be between 1 and ${MAX_PAGE}`);
    const cursor = request.query.cursor === undefined ? undefined : decodeCursor(request.query.cursor);
    if (request.query.cursor !== undefined && !cursor) return sendError(reply, 400, 'querystring/cursor is not a cursor this route gave');
    const page = await listSuppressions(deps.db, { limit, cursor });
    return { items: page.items.map(toJson), nextCursor: page.nextCursor };
  });

  app.get('/admin/suppressions/:email', { schema: { params: EmailParamsSchema } }, async (request, reply) => {
    const item = await getSuppression(deps.db, request.params.email);
    return item ? toJson(item) : sendError(reply, 404, 'address not suppressed');
  });

  app.put('/admin/suppressions/:email', { schema: { params: EmailParamsSchema } }, async (request, reply) => {
    const email = request.params.email.trim();
    if (!EMAIL_PATTERN.test(email)) return sendError(reply, 400, 'params/email must be an email address');
    return toJson(await putSuppression(deps.db, email));
  });

  app.delete('/admin/suppressions/:email', { schema: { params: EmailParamsSchema } }, async (request, reply) => {
    if (!(await deleteSuppression(deps.db, request.params.email))) return sendError(reply, 404, 'address not suppressed');
    return reply.code(204).send();
  });
};
