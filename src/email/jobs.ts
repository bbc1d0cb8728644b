import { Type } from 'typebox';
import { defineQueue } from '../core/job-registry.js';

export const EMAIL_QUEUE = 'email';
export const EMAIL_VERIFICATION_JOB = 'email-verification';
export const ORDER_TRACKING_LINK_JOB = 'order-tracking-link';

// Payloads carry ids only: no address or token ever sits in Redis or the outbox.
export const EmailVerificationPayloadSchema = Type.Object({ userId: Type.String({ pattern: '^[0-9]+$' }) }, { additionalProperties: false });
export const OrderTrackingLinkPayloadSchema = Type.Object(
  { orderId: Type.String({ format: 'uuid' }) },
  { additionalProperties: false },
);

export const emailQueue = defineQueue({
  name: EMAIL_QUEUE,
  jobs: {
    // BullMQ runs jobs without a priority before prioritised ones: a paid customer's tracking email
    // overtakes any backlog of verification emails (signups are public and can be flooded; payments cannot).
    [ORDER_TRACKING_LINK_JOB]: { payload: OrderTrackingLinkPayloadSchema },
    [EMAIL_VERIFICATION_JOB]: { payload: EmailVerificationPayloadSchema, priority: 1 },
  },
  worker: (config) => ({
    concurrency: config.EMAIL_CONCURRENCY,
    limiter: { max: config.EMAIL_RATE_MAX, duration: config.EMAIL_RATE_DURATION_MS },
    // Outage pauses put a job back without spending an attempt; this bounds one that is put back forever.
    maxStartedAttempts: config.EMAIL_MAX_STARTED_ATTEMPTS,
  }),
});
