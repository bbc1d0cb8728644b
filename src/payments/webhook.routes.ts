import type { FastifyPluginAsync } from 'fastify';
import { Type } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../db/schema.js';
import { noteOutcome } from '../core/access-log.js';
import { sendError } from '../core/errors.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import type { Logger } from '../core/logger.js';
import type { Queues } from '../queues.js';
import { publishAfterCommit, type Publisher } from '../outbox/producer.js';
import type { PublishedMarks } from '../outbox/published-marks.js';
import { parsePaymentEvent, PaymentEventSchema, processPaymentEvent, recordIgnoredPaymentEvent } from './events.js';
import type { TransitionDeps } from './transitions.js';
import {
  createWebhookVerifier,
  SIGNATURE_HEADER,
  SIGNATURE_TOLERANCE_S,
  WEBHOOK_ID_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
} from '../core/webhook-signature.js';

export const WEBHOOK_BODY_LIMIT = 64 * 1024;

export interface WebhookRoutesOptions {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
  publisher: Publisher;
  /** Every secret that may sign (several during a rotation), from config. */
  webhookSecrets: readonly string[];
  /** errand_payments_late_success_total */
  lateSuccess: { inc(): void };
  statements: TransitionDeps['statements'];
}

// For GET /docs/openapi.json. The body and headers are documented only: the
// handler verifies the signature over the raw bytes before it parses anything.
const WebhookHeadersSchema = Type.Object({
  [SIGNATURE_HEADER]: Type.String({
    description:
      'Either `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, hex = HMAC-SHA256 with the secret over `${t}.${rawBody}`; ' +
      'or Standard Webhooks `v1,<base64>[ v1,<base64>…]` over `${webhook-id}.${webhook-timestamp}.${rawBody}`. ' +
      `Timestamps more than ${SIGNATURE_TOLERANCE_S} s away are refused.`,
  }),
  [WEBHOOK_ID_HEADER]: Type.Optional(
    Type.String({ description: 'Standard Webhooks: the message id (also the event id when the body has none)' }),
  ),
  [WEBHOOK_TIMESTAMP_HEADER]: Type.Optional(Type.String({ pattern: '^[0-9]+$', description: 'Standard Webhooks: unix seconds' })),
});
const WebhookAnswerSchema = Type.Object(
  {
    received: Type.Literal(true),
    duplicate: Type.Optional(Type.Literal(true)),
    ignored: Type.Optional(Type.Literal(true)),
  },
  {
    description: 'received; `duplicate` for an event id seen before (nothing changes), `ignored` for an event type errand does not handle',
  },
);
const WEBHOOK_ROUTE_DOCS: Record<string, RouteDoc> = {
  'POST /payments/webhook': {
    tags: ['payments'],
    summary: "The payment provider's events",
    description:
      'The first payment.succeeded for a pending, failed or expired order marks it paid and queues exactly one tracking email; ' +
      'payment.failed / payment.expired mark a pending order so. Properties errand does not use are accepted and ignored, at any depth. ' +
      'An unknown providerRef answers 200 (logged as a warning).',
    documentedOnly: {
      body: {
        ...PaymentEventSchema,
        examples: [
          { id: 'evt_1', type: 'payment.succeeded', data: { providerRef: 'pay_0123456789abcdef01234567', amount: 1999, currency: 'USD' } },
        ],
      },
      headers: WebhookHeadersSchema,
    },
    responses: {
      200: WebhookAnswerSchema,
      400: 'malformed JSON, a known field with a wrong type, or no event id (neither `id` nor webhook-id)',
      401: 'missing or bad signature, or a timestamp too far from now',
      413: 'body over 64 KiB',
      422: 'amount or currency differs from the order (order unchanged)',
      503: 'database unavailable; nothing was recorded',
    },
  },
};

/**
 * Order of checks: size (413, while reading), signature over the raw bytes
 * (401: nothing unsigned is even parsed), JSON and schema (400), then one
 * statement (duplicate → 200, amount/currency → 422, transition → 200).
 */
export const webhookRoutes: FastifyPluginAsync<WebhookRoutesOptions> = async (app, deps) => {
  app.addHook('onRoute', describeRoutes(WEBHOOK_ROUTE_DOCS));
  // Encapsulated in this plugin: the signature needs the exact bytes; every other route keeps Fastify's JSON parser.
  // Any content type (or none) is read the same way, so a signed body is judged by its bytes, not its label.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  const verifier = createWebhookVerifier(deps.webhookSecrets);

  app.post('/payments/webhook', { bodyLimit: WEBHOOK_BODY_LIMIT }, async (request, reply) => {
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const check = verifier.verify(request.headers, rawBody);
    if (!check.ok) {
      request.log.warn({ reason: check.reason, scheme: check.scheme }, 'webhook refused: signature');
      return sendError(reply, 401, check.message);
    }

    let body: unknown;
    try {
      body = JSON.parse(rawBody.toString('utf8'));
    } catch {
      return sendError(reply, 400, 'body is not valid JSON');
    }
    const webhookId = request.headers[WEBHOOK_ID_HEADER];
    const parsed = parsePaymentEvent(body, typeof webhookId === 'string' && webhookId !== '' ? webhookId : undefined);
    if (parsed.kind === 'invalid') return sendError(reply, 400, parsed.message);

    if (parsed.kind === 'ignored') {
      const fields = { eventId: parsed.id, eventType: parsed.type };
      if (!(await recordIgnoredPaymentEvent(deps, parsed))) {
        noteOutcome(request, 'webhook event already processed', fields);
        return { received: true, duplicate: true };
      }
      noteOutcome(request, 'webhook event of a type errand does not handle; recorded and ignored', fields);
      return { received: true, ignored: true };
    }

    const { event } = parsed;
    const result = await processPaymentEvent(
      { statements: deps.statements, log: request.log, lateSuccess: deps.lateSuccess },
      parsed.id,
      event,
    );
    const fields = { eventId: parsed.id, eventType: event.type };
    switch (result.kind) {
      case 'duplicate':
        noteOutcome(request, 'webhook event already processed', fields);
        return { received: true, duplicate: true };
      case 'unknown-order':
        request.log.warn({ ...fields, providerRef: event.data.providerRef }, 'webhook event for an unknown providerRef');
        return { received: true };
      case 'mismatch':
        request.log.error(
          {
            ...fields,
            orderId: result.orderId,
            expected: result.expected,
            received: { amount: event.data.amount, currency: event.data.currency },
          },
          'webhook amount or currency differs from the order; order left unchanged',
        );
        return sendError(reply, 422, 'amount or currency differs from the order');
      case 'settled':
        await publishAfterCommit({ ...deps, log: request.log }, result.outboxRows);
        noteOutcome(request, 'webhook event applied', { ...fields, orderId: result.orderId, transitioned: result.transitioned });
        return { received: true };
    }
  });
};
