import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import formbody from '@fastify/formbody';
import { Type } from 'typebox';
import type { RedisClient } from '../core/redis.js';
import type { Db } from '../db/schema.js';
import type { SignupUser } from '../db/signup-user.js';
import { consumeVerificationToken, findVerificationToken } from '../db/verification-tokens.js';
import { ErrorResponseSchema, sendError } from '../core/errors.js';
import { SafeString } from '../core/schemas.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';
import { noteOutcome } from '../core/access-log.js';
import { maskEmail, type Logger } from '../core/logger.js';
import { sendPage } from '../pages/layout.js';
import { prefersHtml } from '../pages/negotiation.js';
import { confirmEmailPage, emailVerifiedPage, verificationLinkProblemPage } from '../pages/verify-email.js';
import type { Queues } from '../queues.js';
import { publishAfterCommit, type Publisher } from '../outbox/producer.js';
import type { PublishedMarks } from '../outbox/published-marks.js';
import { signupThrottleKey } from './throttle.js';
import { hashToken } from './tokens.js';
import { SignupBodySchema } from './schemas.js';

// No control characters: SafeString (a NUL would reach PostgreSQL).
const VerificationTokenSchema = SafeString({ minLength: 1, maxLength: 512 });
const VerifyQuerySchema = Type.Object({ token: VerificationTokenSchema });
const VerifyBodySchema = Type.Object({ token: VerificationTokenSchema }, { additionalProperties: false });
const VerifiedSchema = Type.Object({ status: Type.Literal('verified') });
const FORM_CONTENT_TYPE = 'application/x-www-form-urlencoded';

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
    description:
      'The token is single-use and expires after 24 h. A request whose Accept ranks text/html above application/json ' +
      '(browsers, mail link scanners) gets an HTML page instead: a confirm page with a button that POSTs the token ' +
      '(the token is not used by the GET), or a 400 page saying what to do next. HEAD never uses the token.',
    responses: {
      200: 'verified (JSON); the confirm page (HTML)',
      400: 'missing, unknown, used or expired token (an HTML page for HTML requests)',
      503: 'database unavailable',
    },
  },
  'POST /auth/verify-email': {
    tags: ['signup'],
    summary: 'Verify an email address: the confirm page posts here (form token=…), or JSON {token}',
    description: 'Uses the token. A form post (application/x-www-form-urlencoded) gets an HTML page back, JSON gets JSON.',
    responses: {
      200: 'verified (JSON); the "verified" page for a form post',
      400: 'missing, unknown, used or expired token, unknown field (an HTML page for a form post)',
      413: 'body over 4 KiB',
      415: 'body neither JSON nor a form',
      503: 'database unavailable',
    },
    examples: { body: { token: 'token-from-the-email' } },
  },
};

export interface SignupRoutesOptions {
  db: Db;
  statements: { signupUser: SignupUser };
  redis: RedisClient;
  queues: Queues;
  log: Logger;
  publishedMarks: PublishedMarks;
  publisher: Publisher;
}

export const signupRoutes: FastifyPluginAsync<SignupRoutesOptions> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.addHook('onRoute', describeRoutes(SIGNUP_ROUTE_DOCS));
  const { signupUser } = deps.statements;

  app.post(
    '/auth/signup',
    {
      bodyLimit: 16 * 1024,
      // Per client address, RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS (registerRateLimit).
      config: { rateLimit: {} },
      schema: { body: SignupBodySchema, response: { 202: Type.Object({ status: Type.Literal('accepted') }) } },
    },
    async (request, reply) => {
      const email = request.body.email.trim().toLowerCase();
      const outboxRow = await signupUser({ email, name: request.body.name?.trim() || null, throttleKey: signupThrottleKey(email) });
      if (outboxRow) await publishAfterCommit({ ...deps, log: request.log }, [outboxRow]);
      noteOutcome(request, 'signup accepted', { recipient: maskEmail(email), emailQueued: outboxRow !== undefined });
      // Same answer whether the address is new, unverified or verified: no account enumeration.
      return reply.code(202).send({ status: 'accepted' });
    },
  );

  await app.register(verifyEmailRoutes, { db: deps.db });
};

function isFormPost(contentType: string | undefined): boolean {
  const [mediaType = ''] = (contentType ?? '').split(';');
  return mediaType.trim().toLowerCase() === FORM_CONTENT_TYPE;
}

/**
 * GET shows a confirm page to browsers (and to the mail scanners that fetch every link before the person
 * clicks) without using the token; the page's button POSTs it. API clients that ask for JSON keep the
 * one-step GET. Validation errors are handled here so that a browser gets a page, not JSON.
 */
const verifyEmailRoutes: FastifyPluginAsync<{ db: Db }> = async (fastify, deps) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  // Registered in this plugin only: every other route, /auth/signup included, keeps refusing form bodies (415).
  // fast-querystring makes a repeated field an array (the schema refuses it instead of one value winning) and
  // returns an object without prototype (a field named __proto__ is just an unknown field).
  await fastify.register(formbody);

  app.get(
    '/auth/verify-email',
    { attachValidation: true, schema: { querystring: VerifyQuerySchema, response: { 200: VerifiedSchema, 400: ErrorResponseSchema } } },
    async (request, reply) => {
      const wantsPage = prefersHtml(request.headers.accept);
      // The same URL answers a page or JSON: caches must key on Accept.
      reply.header('vary', 'Accept');
      if (request.validationError) {
        return wantsPage
          ? sendPage(reply, 400, verificationLinkProblemPage('unknown'))
          : sendError(reply, 400, request.validationError.message);
      }
      const hash = hashToken(request.query.token);
      // HEAD (some link checkers send it, whatever their Accept) and HTML requests only read the token.
      if (wantsPage || request.method === 'HEAD') {
        const token = await findVerificationToken(deps.db, hash);
        if (token.state !== 'usable') return sendPage(reply, 400, verificationLinkProblemPage(token.state));
        return sendPage(reply, 200, confirmEmailPage(request.query.token, maskEmail(token.email!)));
      }
      if (!(await consumeVerificationToken(deps.db, hash))) return sendError(reply, 400, 'invalid, used or expired token');
      return { status: 'verified' as const };
    },
  );

  app.post(
    '/auth/verify-email',
    {
      bodyLimit: 4 * 1024,
      attachValidation: true,
      schema: { body: VerifyBodySchema, response: { 200: VerifiedSchema, 400: ErrorResponseSchema } },
    },
    async (request, reply) => {
      // The confirm page's button posts a form and gets a page back; a JSON body gets JSON.
      const fromForm = isFormPost(request.headers['content-type']);
      if (request.validationError) {
        return fromForm
          ? sendPage(reply, 400, verificationLinkProblemPage('unknown'))
          : sendError(reply, 400, request.validationError.message);
      }
      const hash = hashToken(request.body.token);
      if (await consumeVerificationToken(deps.db, hash)) {
        return fromForm ? sendPage(reply, 200, emailVerifiedPage()) : { status: 'verified' as const };
      }
      if (!fromForm) return sendError(reply, 400, 'invalid, used or expired token');
      // Read after the failed attempt, only to tell the person which case it is (e.g. a double click: "already used").
      const { state } = await findVerificationToken(deps.db, hash);
      return sendPage(reply, 400, verificationLinkProblemPage(state === 'usable' ? 'unknown' : state));
    },
  );
};
