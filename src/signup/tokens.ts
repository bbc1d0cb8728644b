import { createHash, randomBytes } from 'node:crypto';

export const VERIFICATION_TOKEN_TTL_MS = 24 * 3600 * 1000;

/** 32 random bytes, URL-safe. Only its SHA-256 is stored; a database leak yields no usable token. */
export function mintVerificationToken(): { raw: string; hash: Buffer } {
  const raw = randomBytes(32).toString('base64url');
  return { raw, hash: hashToken(raw) };
}

export function hashToken(raw: string): Buffer {
  return createHash('sha256').update(raw).digest();
}
