import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/**
 * The tracking key is derived from LINK_SECRET, errand's own secret: the payment
 * provider (and anyone with its dashboard) knows the webhook secret, and rotating
 * that must not kill the links already sent. Derived once, in createDeps. Tokens
 * are never stored: they are recomputed from the order id.
 */
export function deriveTrackingKey(linkSecret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', linkSecret, 'errand', 'order-tracking', 32));
}

/** HMAC-SHA256 of the order id, base64url (43 characters). */
export function trackingToken(key: Buffer, orderId: string): string {
  return createHmac('sha256', key).update(orderId).digest('base64url');
}

/** Constant-time check of a presented token against the one for `orderId`. */
export function isValidTrackingToken(key: Buffer, orderId: string, token: string | undefined): boolean {
  const expected = Buffer.from(trackingToken(key, orderId));
  const presented = Buffer.from(token ?? '');
  // The expected length is public (always 43); only equal-length buffers can be compared.
  return presented.length === expected.length && timingSafeEqual(presented, expected);
}
