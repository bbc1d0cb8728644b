import { createHash, timingSafeEqual } from 'node:crypto';
import { sendError } from '../core/errors.js';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Constant time whatever the lengths: both sides are hashed to 32 bytes first. */
export function secretsEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function unauthorized(reply: FastifyReply, challenge: string) {
  return sendError(reply.header('www-authenticate', challenge), 401, 'missing or invalid credentials');
}

/** onRequest hook: `Authorization: Bearer <token>`. */
export function requireBearer(token: string) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (!match || !secretsEqual(match[1].trim(), token)) return unauthorized(reply, 'Bearer realm="errand-admin"');
  };
}

/** onRequest hook: HTTP Basic with any user name and the token as password (what browsers can send). */
export function requireBasicPassword(password: string) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const match = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(request.headers.authorization ?? '');
    const decoded = match ? Buffer.from(match[1], 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon < 0 || !secretsEqual(decoded.slice(colon + 1), password)) {
      return unauthorized(reply, 'Basic realm="errand-admin", charset="UTF-8"');
    }
  };
}
