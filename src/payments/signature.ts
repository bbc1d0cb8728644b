import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'webhook-signature';
/** Signed timestamps further than this from our clock (either way) are refused: a captured request cannot be replayed later. */
export const SIGNATURE_TOLERANCE_S = 300;

/** HMAC-SHA256 over `${t}.` followed by the raw body bytes, exactly as received. */
export function computeSignature(secret: string, timestamp: number, rawBody: Buffer | string): Buffer {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest();
}

/** The header value a sender puts on `rawBody`: `t=<unix seconds>,v1=<hex>`. */
export function signWebhook(secret: string, rawBody: Buffer | string, timestamp = Math.floor(Date.now() / 1000)): string {
  return `t=${timestamp},v1=${computeSignature(secret, timestamp, rawBody).toString('hex')}`;
}

export type SignatureCheck = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'timestamp' | 'mismatch' };

/** `t=…` once, one or more `v1=…` (several during a secret rotation); other schemes are ignored. */
function parseHeader(header: string): { timestamp: number; signatures: Buffer[] } | undefined {
  let timestamp: number | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) return undefined;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      if (timestamp !== undefined || !/^\d{1,12}$/.test(value)) return undefined;
      timestamp = Number(value);
    } else if (key === 'v1') {
      if (!/^[0-9a-fA-F]{64}$/.test(value)) return undefined;
      signatures.push(Buffer.from(value, 'hex'));
    }
  }
  if (timestamp === undefined || signatures.length === 0) return undefined;
  return { timestamp, signatures };
}

/** Checks the header against the raw bytes: present, well formed, within ±300 s, and a constant-time match. */
export function verifyWebhookSignature(
  secret: string,
  header: string | string[] | undefined,
  rawBody: Buffer,
  nowMs = Date.now(),
): SignatureCheck {
  if (header === undefined || header === '') return { ok: false, reason: 'missing' };
  if (typeof header !== 'string') return { ok: false, reason: 'malformed' };
  const parsed = parseHeader(header);
  if (!parsed) return { ok: false, reason: 'malformed' };
  if (Math.abs(nowMs - parsed.timestamp * 1000) > SIGNATURE_TOLERANCE_S * 1000) return { ok: false, reason: 'timestamp' };
  const expected = computeSignature(secret, parsed.timestamp, rawBody);
  // Every candidate is compared (no early exit); all are 32 bytes, as timingSafeEqual requires.
  let matched = false;
  for (const candidate of parsed.signatures) matched = timingSafeEqual(candidate, expected) || matched;
  return matched ? { ok: true } : { ok: false, reason: 'mismatch' };
}
