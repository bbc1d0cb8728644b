import { Type, type Static } from 'typebox';

export const EMAIL_VERIFICATION_JOB = 'email-verification';
export const ORDER_TRACKING_LINK_JOB = 'order-tracking-link';

// Payloads carry ids only: no address or token ever sits in Redis or the outbox.
export const EmailVerificationPayloadSchema = Type.Object({ userId: Type.String({ pattern: '^[0-9]+$' }) }, { additionalProperties: false });
export type EmailVerificationPayload = Static<typeof EmailVerificationPayloadSchema>;

export const OrderTrackingLinkPayloadSchema = Type.Object({ orderId: Type.String({ minLength: 1 }) }, { additionalProperties: false });
export type OrderTrackingLinkPayload = Static<typeof OrderTrackingLinkPayloadSchema>;
