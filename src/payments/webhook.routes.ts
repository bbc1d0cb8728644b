import type { FastifyPluginAsync } from 'fastify';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../core/db.js';
import { sendError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Queues } from '../queues.js';
import { publishAfterCommit } from '../outbox/producer.js';
import type { PublishedMarks } from '../outbox/published-marks.js';
import { parsePaymentEvent, processPaymentEvent, recordIgnoredPaymentEvent } from './events.js';
import { createWebhookVerifier, WEBHOOK_ID_HEADER } from './signature.js';

export const WEBHOOK_BODY_LIMIT = 64 * 1024;

export interface WebhookRoutesOptions {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
  /** Every secret that may sign (several during a rotation), from config. */
  webhookSecrets: readonly string[];
  /** errand_payments_late_success_total */
  lateSuccess: { inc(): void };
}

/**
 * Order of checks: size (413, while reading), signature over the raw bytes
 * (401: nothing unsigned is even parsed), JSON and schema (400), then one
 * statement (duplicate → 200, amount/currency → 422, transition → 200).
 */
export const webhookRoutes: FastifyPluginAsync<WebhookRoutesOptions> = async (app, deps) => {
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
        request.log.info(fields, 'webhook event already processed');
        return { received: true, duplicate: true };
      }
      request.log.info(fields, 'webhook event of a type errand does not handle; recorded and ignored');
      return { received: true, ignored: true };
    }

    const { event } = parsed;
    const result = await processPaymentEvent({ db: deps.db, log: request.log, lateSuccess: deps.lateSuccess }, parsed.id, event);
    const fields = { eventId: parsed.id, eventType: event.type };
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
      case 'settled':
        await publishAfterCommit({ ...deps, log: request.log }, result.outboxRows);
        request.log.info({ ...fields, orderId: result.orderId, transitioned: result.transitioned }, 'webhook event applied');
        return { received: true };
    }
  });
};
