import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../core/db.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { noteOutcome } from '../core/access-log.js';
import { maskEmail, type Logger } from '../core/logger.js';
import type { Queues } from '../queues.js';
import { publishAfterCommit } from '../outbox/producer.js';
import type { PublishedMarks } from '../outbox/published-marks.js';
import { consumeVerificationToken, prepareSignupUser } from './repository.js';
import { hashToken } from './tokens.js';

export const SignupBodySchema = Type.Object(
  {
    email: Type.String({ format: 'email', maxLength: 254 }),
    // An empty name is a valid string (the contract's 400s are bad email, unknown fields, wrong types); stored as no name.
    name: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false, examples: [{ email: 'ada@example.com', name: 'Ada' }] },
);

const VerifyQuerySchema = Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }) });

// For GET /docs/openapi.json: what each route answers, beyond its schemas.
const SIGNUP_ROUTE_DOCS: Record<string, RouteDoc> = {
  'POST /auth/signup': {
    tags: ['signup'],
    summary: 'Sign up (or ask again for the verification email)',
    description:
      'Accepted for any valid address, new, unverified or verified alike (no account enumeration). ' +
      'A verification email is queued for new and unverified addresses, at most one per address per 60 s.',
    responses: {
      202: 'accepted; the verification email, if any, is queued',
      400: 'invalid email, unknown property or wrong type',
      413: 'body over 16 KiB',
      415: 'body is not application/json',
      429: 'over the per-client rate limit (see the Retry-After header)',
      503: 'database unavailable; nothing was written',
    },
  },
  'GET /auth/verify-email': {
    tags: ['signup'],
    summary: 'Verify an email address with the token from the verification email',
    description: 'The token is single-use and expires after 24 h.',
    responses: {
      200: 'verified',
      400: 'missing, unknown, used or expired token',
      503: 'database unavailable',
    },
  },
};

export interface SignupRoutesOptions {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
}

export const signupRoutes: FastifyPluginAsync<SignupRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(SIGNUP_ROUTE_DOCS));
  const signupUser = prepareSignupUser(deps.db);

  app.post(
    '/auth/signup',
    {
      bodyLimit: 16 * 1024,
      schema: { body: SignupBodySchema, response: { 202: Type.Object({ status: Type.Literal('accepted') }) } },
    },
    async (request, reply) => {
      const email = request.body.email.trim().toLowerCase();
      const outboxRow = await signupUser({ email, name: request.body.name?.trim() || null });
      if (outboxRow) await publishAfterCommit({ ...deps, log: request.log }, [outboxRow]);
      noteOutcome(request, 'signup accepted', { recipient: maskEmail(email), emailQueued: outboxRow !== undefined });
      // Same answer whether the address is new, unverified or verified: no account enumeration.
      return reply.code(202).send({ status: 'accepted' });
    },
  );

  app.get(
    '/auth/verify-email',
    { schema: { querystring: VerifyQuerySchema, response: { 200: Type.Object({ status: Type.Literal('verified') }), 400: ErrorResponseSchema } } },
    async (request, reply) => {
      const verified = await consumeVerificationToken(deps.db, hashToken(request.query.token));
      if (!verified) {
        return sendError(reply, 400, 'invalid, used or expired token');
      }
      return { status: 'verified' as const };
    },
  );
};
