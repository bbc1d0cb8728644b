import type { FastifyPluginAsync } from 'fastify';
import { Value } from 'typebox/value';
import type { Redis } from 'ioredis';
import type { Db } from '../core/db.js';
import { sendError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Queues } from '../queues.js';
import { publishAfterCommit, } from '../outbox/producer.js';
import type { PublishedMarks } from '../outbox/published-marks.js';
import { PaymentEventSchema, processPaymentEvent } from './events.js';
import { SIGNATURE_HEADER, SIGNATURE_TOLERANCE_S, verifyWebhookSignature } from './signature.js';

export const WEBHOOK_BODY_LIMIT = 64 * 1024;

export interface WebhookRoutesOptions {
  db: Db;
  redis: Redis;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
  webhookSecret: string;
}

const SIGNATURE_MESSAGES = {
  missing: `missing ${SIGNATURE_HEADER} header`,
  malformed: `malformed ${SIGNATURE_HEADER} header`,
  timestamp: `${SIGNATURE_HEADER} timestamp is more than ${SIGNATURE_TOLERANCE_S} s away`,
  mismatch: `${SIGNATURE_HEADER} does not match the body`,
} as const;


/**
 * Order of checks: size (413, while reading), signature over the raw bytes
 * (401: nothing unsigned is even parsed), JSON and schema (400), then one
 * transaction (duplicate → 200, amount/currency → 422, transition → 200).
 */
export const webhookRoutes: FastifyPluginAsync<WebhookRoutesOptions> = async (app, deps) => {
  // Encapsulated in this plugin: the signature needs the exact bytes; every other route keeps Fastify's JSON parser.
  // Any content type (or none) is read the same way, so a signed body is judged by its bytes, not its label.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  app.post('/payments/webhook', { bodyLimit: WEBHOOK_BODY_LIMIT }, async (request, reply) => {
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const check = verifyWebhookSignature(deps.webhookSecret, request.headers[SIGNATURE_HEADER], rawBody);
    if (!check.ok) {
      request.log.warn({ reason: check.reason }, 'webhook refused: signature');
      return sendError(reply, 401, SIGNATURE_MESSAGES[check.reason]);
    }

    let body: unknown;
    try {
      body = JSON.parse(rawBody.toString('utf8'));
    } catch {
      return sendError(reply, 400, 'body is not valid JSON');
    }
    if (!Value.Check(PaymentEventSchema, body)) {
      const [first] = Value.Errors(PaymentEventSchema, body);
      const where = first?.instancePath || 'body';
      return sendError(reply, 400, `${where} ${first?.message ?? 'is invalid'}`);
    }
    const event = body;

    const result = await processPaymentEvent(deps.db, event);
    const fields = { eventId: event.id, eventType: event.type };
    switch (result.kind) {
      case 'duplicate':
        request.log.info(fields, 'webhook event already processed');
        return { received: true, duplicate: true };
      case 'unknown-order':
        request.log.warn({ ...fields, providerRef: event.data.providerRef }, 'webhook event for an unknown providerRef');
        return { received: true };
      case 'mismatch':
        request.log.error(
          { ...fields, orderId: result.orderId, expected: result.expected, received: { amount: event.data.amount, currency: event.data.currency } },
          'webhook amount or currency differs from the order; order left unchanged',
        );
        return sendError(reply, 422, 'amount or currency differs from the order');
      case 'applied':
        await publishAfterCommit({ ...deps, log: request.log }, result.outboxRows);
        request.log.info({ ...fields, orderId: result.orderId, transitioned: result.transitioned }, 'webhook event applied');
        return { received: true };
    }
  });
};
