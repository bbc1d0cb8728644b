import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { OrderStatusSchema, type Db } from '../db/schema.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { SafeString } from '../core/schemas.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { maskEmail } from '../core/logger.js';
import { sendPage } from '../pages/layout.js';
import { prefersHtml } from '../pages/negotiation.js';
import { orderNotFoundPage, orderTrackingPage } from '../pages/tracking.js';
import { findOrderById, insertOrder } from '../db/orders.js';
import { isUuid, isValidTrackingToken } from './tracking.js';

export const CreateOrderBodySchema = Type.Object(
  {
    email: SafeString({ format: 'email', maxLength: 254 }),
    // minor units (cents); stays exact in a JSON number
    amount: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
  },
  { additionalProperties: false, examples: [{ email: 'ada@example.com', amount: 1999, currency: 'USD' }] },
);

const OrderCreatedSchema = Type.Object({
  id: Type.String(),
  status: Type.Literal('pending'),
  amount: Type.Integer(),
  currency: Type.String(),
  providerRef: Type.String(),
  createdAt: Type.String(),
});

const OrderTrackingSchema = Type.Object({
  id: Type.String(),
  status: OrderStatusSchema,
  amount: Type.Integer(),
  currency: Type.String(),
  paidAt: Type.Union([Type.String(), Type.Null()]),
});

// Not `format: uuid`: a malformed id is just another wrong id (404), not a 400 that tells ids apart.
// No length limits and no type on token: an overlong, repeated (?token=a&token=b) or odd token is a wrong token (404).
const TrackingParamsSchema = Type.Object({ id: SafeString({ examples: ['0192f1c4-6c1e-7a4b-9d3e-2f5a8b7c6d10'] }) });
const TrackingQuerySchema = Type.Object({
  token: Type.Optional(Type.Unknown({ description: 'from the tracking email', examples: ['token-from-the-email'] })),
});

// For GET /docs/openapi.json: what each route answers, beyond its schemas.
const ORDER_ROUTE_DOCS: Record<string, RouteDoc> = {
  'POST /orders': {
    tags: ['orders'],
    summary: 'Create an order',
    description:
      'amount is a positive integer in minor units (cents); currency is 3 upper-case letters. The order waits for the payment webhook or a sweep.',
    responses: {
      201: 'created, pending payment',
      400: 'invalid email, amount or currency; unknown property or wrong type',
      413: 'body over 16 KiB',
      415: 'body is not application/json',
      429: 'over the per-client rate limit (see the Retry-After header)',
      503: 'database unavailable; nothing was written',
    },
  },
  'GET /orders/:id/tracking': {
    tags: ['orders'],
    summary: "An order's status, with the token from its tracking email",
    description: 'A request whose Accept ranks text/html above application/json gets the same as an HTML page (and the 404 as a page).',
    responses: {
      200: 'the order (an HTML page for HTML requests)',
      404: 'wrong id or token (the same answer for both)',
      503: 'database unavailable',
    },
  },
};

export interface OrderRoutesOptions {
  db: Db;
  /** From LINK_SECRET, derived once (createDeps). */
  trackingKey: Buffer;
}

/** What the payment provider knows the order by. */
function newProviderRef(): string {
  return `pay_${randomBytes(12).toString('hex')}`;
}

export const orderRoutes: FastifyPluginAsync<OrderRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(ORDER_ROUTE_DOCS));
  const { trackingKey } = deps;

  app.post(
    '/orders',
    { bodyLimit: 16 * 1024, config: { rateLimit: {} }, schema: { body: CreateOrderBodySchema, response: { 201: OrderCreatedSchema } } },
    async (request, reply) => {
      const email = request.body.email.trim().toLowerCase();
      const order = await insertOrder(deps.db, {
        email,
        amount: request.body.amount,
        currency: request.body.currency,
        providerRef: newProviderRef(),
      });
      request.log.info({ orderId: order.id, recipient: maskEmail(email) }, 'order created');
      return reply.code(201).send({
        id: order.id,
        status: 'pending' as const,
        amount: order.amount,
        currency: order.currency,
        providerRef: order.providerRef,
        createdAt: order.createdAt.toISOString(),
      });
    },
  );

  app.get(
    '/orders/:id/tracking',
    {
      schema: {
        params: TrackingParamsSchema,
        querystring: TrackingQuerySchema,
        response: { 200: OrderTrackingSchema, 404: ErrorResponseSchema },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      // The buyer's browser gets a page; API clients keep JSON. Caches must key on Accept.
      const wantsPage = prefersHtml(request.headers.accept);
      reply.header('vary', 'Accept');
      // The token is checked first, without touching the database; every failure gets the same answer.
      const order =
        typeof request.query.token === 'string' && isValidTrackingToken(trackingKey, id, request.query.token) && isUuid(id)
          ? await findOrderById(deps.db, id)
          : undefined;
      if (!order) return wantsPage ? sendPage(reply, 404, orderNotFoundPage()) : sendError(reply, 404, 'order not found');
      if (wantsPage) return sendPage(reply, 200, orderTrackingPage(order));
      return {
        id: order.id,
        status: order.status,
        amount: order.amount,
        currency: order.currency,
        paidAt: order.paidAt?.toISOString() ?? null,
      };
    },
  );
};
