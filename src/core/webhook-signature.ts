import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'webhook-signature';
/** Standard Webhooks (standardwebhooks.com): the message id and timestamp travel in their own headers, and are signed. */
export const WEBHOOK_ID_HEADER = 'webhook-id';
export const WEBHOOK_TIMESTAMP_HEADER = 'webhook-timestamp';
/** Signed timestamps further than this from our clock (either way) are refused: a captured request cannot be replayed later. */
export const SIGNATURE_TOLERANCE_S = 300;

const WHSEC_PREFIX = 'whsec_';

/** HMAC-SHA256 over `${t}.` followed by the raw body bytes, exactly as received (the `t=…,v1=<hex>` scheme). */
export function computeSignature(secret: string | Buffer, timestamp: number, rawBody: Buffer | string): Buffer {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest();
}

/** The header value a sender puts on `rawBody`: `t=<unix seconds>,v1=<hex>`. */
export function signWebhook(secret: string, rawBody: Buffer | string, timestamp = Math.floor(Date.now() / 1000)): string {
  return `t=${timestamp},v1=${computeSignature(secret, timestamp, rawBody).toString('hex')}`;
}

/** Standard Webhooks' key: the base64-decoded part of a `whsec_…` secret, else the secret's own bytes. */
export function standardWebhooksKey(secret: string): Buffer {
  return secret.startsWith(WHSEC_PREFIX) ? Buffer.from(secret.slice(WHSEC_PREFIX.length), 'base64') : Buffer.from(secret, 'utf8');
}

/** HMAC-SHA256 over `${id}.${timestamp}.` followed by the raw body bytes (Standard Webhooks). */
export function computeStandardSignature(key: Buffer, id: string, timestamp: number, rawBody: Buffer | string): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestamp}.`).update(rawBody).digest();
}

/** The three headers a Standard Webhooks sender puts on `rawBody`. */
export function signStandardWebhook(
  secret: string,
  id: string,
  rawBody: Buffer | string,
  timestamp = Math.floor(Date.now() / 1000),
): Record<string, string> {
  const signature = computeStandardSignature(standardWebhooksKey(secret), id, timestamp, rawBody).toString('base64');
  return { [WEBHOOK_ID_HEADER]: id, [WEBHOOK_TIMESTAMP_HEADER]: String(timestamp), [SIGNATURE_HEADER]: `v1,${signature}` };
}

export type SignatureFailure = 'missing' | 'malformed' | 'timestamp' | 'mismatch';
export type SignatureScheme = 'timestamped-hex' | 'standard-webhooks';
export type SignatureCheck =
  { ok: true; scheme: SignatureScheme } | { ok: false; scheme: SignatureScheme | undefined; reason: SignatureFailure; message: string };

type Headers = Record<string, string | string[] | undefined>;

interface ParsedSignature {
  scheme: SignatureScheme;
  timestamp: number;
  /** What the HMAC covers before the body. */
  prefix: string;
  candidates: Buffer[];
}

const TIMESTAMP = /^\d{1,12}$/;
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;
const BASE64_SHA256 = /^[A-Za-z0-9+/]{43}=$/;

/** `t=…` once, one or more `v1=<hex>` (several during a secret rotation); other schemes are ignored. */
function parseTimestampedHex(header: string): ParsedSignature | undefined {
  let timestamp: number | undefined;
  const candidates: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) return undefined;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      if (timestamp !== undefined || !TIMESTAMP.test(value)) return undefined;
      timestamp = Number(value);
    } else if (key === 'v1') {
      if (!HEX_SHA256.test(value)) return undefined;
      candidates.push(Buffer.from(value, 'hex'));
    }
  }
  if (timestamp === undefined || candidates.length === 0) return undefined;
  return { scheme: 'timestamped-hex', timestamp, prefix: `${timestamp}.`, candidates };
}

/** Space-separated `v1,<base64>` entries; other versions (e.g. `v1a`, asymmetric) are skipped as the spec says. */
function parseStandard(header: string, id: string, timestampValue: string): ParsedSignature | undefined {
  if (!TIMESTAMP.test(timestampValue) || id.length > 255) return undefined;
  const candidates: Buffer[] = [];
  for (const entry of header.trim().split(/ +/)) {
    const comma = entry.indexOf(',');
    if (comma === -1) return undefined;
    if (entry.slice(0, comma) !== 'v1') continue;
    const value = entry.slice(comma + 1);
    if (!BASE64_SHA256.test(value)) return undefined;
    candidates.push(Buffer.from(value, 'base64'));
  }
  if (candidates.length === 0) return undefined;
  const timestamp = Number(timestampValue);
  return { scheme: 'standard-webhooks', timestamp, prefix: `${id}.${timestamp}.`, candidates };
}

const failure = (scheme: SignatureScheme | undefined, reason: SignatureFailure, message: string): SignatureCheck => ({
  ok: false,
  scheme,
  reason,
  message,
});

/** One secret's keys, decoded once: the hex scheme signs with the secret's bytes, Standard Webhooks with its decoded key. */
interface SecretKeys {
  timestampedHex: Buffer;
  standard: Buffer;
}

export interface WebhookVerifier {
  /** Checks the headers against the raw bytes: present, well formed, within ±300 s, and a constant-time match with any secret. */
  verify(headers: Headers, rawBody: Buffer, nowMs?: number): SignatureCheck;
}

/** Decodes every configured secret once (route setup), not per request. */
export function createWebhookVerifier(secrets: readonly string[]): WebhookVerifier {
  if (secrets.length === 0) throw new Error('at least one webhook secret is required');
  const keys: SecretKeys[] = secrets.map((secret) => ({
    timestampedHex: Buffer.from(secret, 'utf8'),
    standard: standardWebhooksKey(secret),
  }));

  return {
    verify(headers, rawBody, nowMs = Date.now()) {
      const header = headers[SIGNATURE_HEADER];
      if (header === undefined || header === '') return failure(undefined, 'missing', `missing ${SIGNATURE_HEADER} header`);
      if (typeof header !== 'string') return failure(undefined, 'malformed', `malformed ${SIGNATURE_HEADER} header`);
      // `t=…,v1=…` has `=` in its first comma-separated part; Standard Webhooks' `v1,<base64>` does not.
      const standard = !header.split(',', 1)[0].includes('=');
      let parsed: ParsedSignature | undefined;
      if (standard) {
        const id = headers[WEBHOOK_ID_HEADER];
        const timestamp = headers[WEBHOOK_TIMESTAMP_HEADER];
        if (typeof id !== 'string' || id === '' || typeof timestamp !== 'string' || timestamp === '') {
          return failure(
            'standard-webhooks',
            'missing',
            `missing ${WEBHOOK_ID_HEADER} or ${WEBHOOK_TIMESTAMP_HEADER} header for a Standard Webhooks ${SIGNATURE_HEADER}`,
          );
        }
        parsed = parseStandard(header, id, timestamp);
        if (!parsed)
          return failure(
            'standard-webhooks',
            'malformed',
            `malformed ${SIGNATURE_HEADER}, ${WEBHOOK_ID_HEADER} or ${WEBHOOK_TIMESTAMP_HEADER} header`,
          );
      } else {
        parsed = parseTimestampedHex(header);
        if (!parsed) return failure('timestamped-hex', 'malformed', `malformed ${SIGNATURE_HEADER} header`);
      }
      if (Math.abs(nowMs - parsed.timestamp * 1000) > SIGNATURE_TOLERANCE_S * 1000) {
        return failure(parsed.scheme, 'timestamp', `${SIGNATURE_HEADER} timestamp is more than ${SIGNATURE_TOLERANCE_S} s away`);
      }
      // Every candidate is compared with every secret's HMAC (no early exit); all are 32 bytes, as timingSafeEqual requires.
      let matched = false;
      for (const key of keys) {
        const expected = createHmac('sha256', parsed.scheme === 'standard-webhooks' ? key.standard : key.timestampedHex)
          .update(parsed.prefix)
          .update(rawBody)
          .digest();
        for (const candidate of parsed.candidates) matched = timingSafeEqual(candidate, expected) || matched;
      }
      return matched
        ? { ok: true, scheme: parsed.scheme }
        : failure(parsed.scheme, 'mismatch', `${SIGNATURE_HEADER} does not match the body`);
    },
  };
}
