import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../core/db.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { maskEmail, type Logger } from '../core/logger.js';
import { EMAIL_QUEUE, type Queues } from '../core/queues.js';
import { EMAIL_VERIFICATION_JOB } from '../email/jobs.js';
import { insertOutboxJob, publishAfterCommit, type PublishedMarks } from '../outbox/outbox.js';
import { consumeVerificationToken, upsertUserForVerification } from './repository.js';
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

  app.post(
    '/auth/signup',
    {
      bodyLimit: 16 * 1024,
      schema: { body: SignupBodySchema, response: { 202: Type.Object({ status: Type.Literal('accepted') }) } },
    },
    async (request, reply) => {
      const email = request.body.email.trim().toLowerCase();
      const outboxRows = await deps.db.transaction().execute(async (trx) => {
        const userId = await upsertUserForVerification(trx, { email, name: request.body.name?.trim() || null });
        if (userId === null) return [];
        return [await insertOutboxJob(trx, { queue: EMAIL_QUEUE, name: EMAIL_VERIFICATION_JOB, data: { userId } })];
      });
      await publishAfterCommit({ ...deps, log: request.log }, outboxRows);
      request.log.info({ recipient: maskEmail(email), emailQueued: outboxRows.length > 0 }, 'signup accepted');
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
