import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../core/db.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
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
  { additionalProperties: false },
);

const VerifyQuerySchema = Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }) });

export interface SignupRoutesOptions {
  db: Db;
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
}

export const signupRoutes: FastifyPluginAsync<SignupRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
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
      request.log.info({ recipient: maskEmail(email), emailQueued: outboxRow !== undefined }, 'signup accepted');
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
