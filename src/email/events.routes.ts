import type { FastifyPluginAsync } from 'fastify';
import { Type } from 'typebox';
import type { Counter } from 'prom-client';
import type { Db } from '../db/schema.js';
import { noteOutcome } from '../core/access-log.js';
import { sendError } from '../core/errors.js';
import { maskEmail } from '../core/logger.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { recordEmailEvents, type EmailEventRow } from '../db/suppressions.js';
import { createReceivers, type EmailEventsOptions } from './events/options.js';
import { SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER } from './events/sendgrid.js';
import type { EmailEventProvider, EmailEventReceiver } from './events/types.js';

export const EMAIL_EVENTS_BODY_LIMIT = 1024 * 1024;

export interface EmailEventsRoutesOptions {
  db: Db;
  options: EmailEventsOptions;
  /** errand_email_events_total */
  emailEvents: Pick<Counter<'provider' | 'kind'>, 'inc'>;
  /** Receivers to use instead of those the options make (tests, bench). */
  receivers?: Map<EmailEventProvider, EmailEventReceiver>;
}

const AnswerSchema = Type.Object(
  {
    received: Type.Literal(true),
    events: Type.Integer({ description: 'bounces and complaints in this delivery not seen before' }),
    ignored: Type.Integer({ description: 'events of types errand does not act on' }),
    suppressed: Type.Integer({ description: 'addresses suppressed by this delivery' }),
  },
  { description: 'an authentic delivery, including repeated ones and event types errand does not act on' },
);

const optionalHeader = (description: string) => Type.Optional(Type.String({ description }));
const DOCS: Record<EmailEventProvider, { summary: string; headers?: ReturnType<typeof Type.Object>; example: unknown }> = {
  ses: {
    summary: 'Amazon SES bounce and complaint notifications through SNS',
    example: { Type: 'Notification', MessageId: 'example', TopicArn: 'arn:aws:sns:us-east-1:123456789012:ses-events', Message: '{}' },
  },
  sendgrid: {
    summary: "SendGrid's signed Event Webhook",
    headers: Type.Object({
      [SENDGRID_SIGNATURE_HEADER]: Type.String({ description: 'base64 ECDSA P-256 / SHA-256 signature of timestamp + raw body' }),
      [SENDGRID_TIMESTAMP_HEADER]: Type.String({ description: 'unix seconds, within 300 s of now' }),
    }),
    example: [{ email: 'someone@example.com', event: 'bounce', sg_message_id: 'example', timestamp: 1700000000 }],
  },
  mailgun: {
    summary: 'Mailgun webhooks (JSON), HMAC-signed with a one-use token',
    example: { signature: { timestamp: '1700000000', token: 'example', signature: '00' }, 'event-data': { event: 'failed' } },
  },
  postmark: {
    summary: 'Postmark bounce and spam complaint webhooks (HTTP Basic)',
    headers: Type.Object({ authorization: optionalHeader('Basic base64(user:password), EMAIL_EVENTS_POSTMARK_AUTH') }),
    example: { RecordType: 'Bounce', ID: 42, Type: 'HardBounce', Email: 'someone@example.com' },
  },
  resend: {
    summary: 'Resend email.bounced / email.complained (Standard Webhooks)',
    headers: Type.Object({
      'svix-id': optionalHeader('or webhook-id'),
      'svix-timestamp': optionalHeader('or webhook-timestamp; unix seconds within 300 s of now'),
      'svix-signature': optionalHeader('or webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>'),
    }),
    example: { type: 'email.bounced', data: { to: ['someone@example.com'], bounce: { type: 'Permanent' } } },
  },
};

const SES_ONLY: Record<number, string> = { 502: 'the signing certificate or the SubscribeURL could not be fetched (SNS retries)' };

function routeDoc(provider: EmailEventProvider): RouteDoc {
  const doc = DOCS[provider];
  return {
    tags: ['email'],
    summary: doc.summary,
    description:
      'Verified over the raw bytes as the provider signs it. Bounces and complaints are recorded once each (a repeated delivery ' +
      'changes nothing); a hard bounce or complaint suppresses the address at once, soft bounces at EMAIL_SOFT_BOUNCE_LIMIT within ' +
      'EMAIL_SOFT_BOUNCE_WINDOW_DAYS. Other event types are accepted and ignored. Exists only when the provider is configured.',
    documentedOnly: {
      body: { ...Type.Unknown({ description: "the provider's own payload" }), examples: [doc.example] },
      ...(doc.headers ? { headers: doc.headers } : {}),
    },
    responses: {
      200: AnswerSchema,
      400: 'malformed body or event',
      401: 'bad or missing signature or credentials, a stale timestamp, a token used before, an SNS topic not listed or a certificate URL not trusted',
      413: 'body over 1 MiB',
      ...(provider === 'ses' ? SES_ONLY : {}),
      503: 'database unavailable; nothing was recorded',
    },
  };
}

/** `POST /webhooks/email/:provider` for each configured provider; an unconfigured one has no route (404). */
export const emailEventsRoutes: FastifyPluginAsync<EmailEventsRoutesOptions> = async (app, deps) => {
  const receivers = deps.receivers ?? createReceivers(deps.options);
  app.addHook('onRoute', describeRoutes(Object.fromEntries([...receivers.keys()].map((p) => [`POST /webhooks/email/${p}`, routeDoc(p)]))));
  // The signatures cover the exact bytes: every content type (or none) is read raw, as the payment webhook does.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: EMAIL_EVENTS_BODY_LIMIT }, (_request, body, done) => done(null, body));

  for (const [provider, receiver] of receivers) {
    app.post(`/webhooks/email/${provider}`, { bodyLimit: EMAIL_EVENTS_BODY_LIMIT }, async (request, reply) => {
      const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const result = await receiver.receive({ headers: request.headers, rawBody, nowMs: Date.now() });
      if (!result.ok) {
        request.log.warn({ provider, status: result.status, reason: result.message }, 'email event delivery refused');
        return sendError(reply, result.status, result.message);
      }
      const acted = result.events.filter((event): event is EmailEventRow & typeof event => event.kind !== 'ignored');
      const ignored = result.events.length - acted.length;
      const recorded = await recordEmailEvents(
        deps.db,
        acted,
        deps.options.softBounce,
        result.token && { provider, token: result.token.token, signedAt: result.token.signedAt },
      );
      if (recorded.replayed) {
        request.log.warn({ provider }, 'email event delivery refused: token used before');
        return sendError(reply, 401, 'signature token used before');
      }
      for (const event of recorded.recorded) deps.emailEvents.inc({ provider, kind: event.kind });
      if (ignored > 0) deps.emailEvents.inc({ provider, kind: 'ignored' }, ignored);
      for (const { email, reason } of recorded.suppressed) {
        request.log.info({ provider, recipient: maskEmail(email), reason }, 'email address suppressed');
      }
      noteOutcome(request, result.note ?? 'email events received', {
        provider,
        events: recorded.recorded.length,
        repeated: acted.length - recorded.recorded.length,
        ignored,
        suppressed: recorded.suppressed.length,
      });
      return { received: true, events: recorded.recorded.length, ignored, suppressed: recorded.suppressed.length };
    });
  }
};
