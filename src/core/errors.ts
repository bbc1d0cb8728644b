import { STATUS_CODES } from 'node:http';
import { pathOnly } from './logger.js';
import type { FastifyError, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { Type } from 'typebox';

// A request that waited as long as the pool's connection timeout for a shared statement to start (the statement batcher, src/db).
const DATABASE_BUSY = 'ERRAND_DATABASE_BUSY';

/** What a caller of a shared statement gets when none could start in time: handled as the database being unavailable. */
export function databaseBusyError(): Error {
  return Object.assign(new Error('timeout exceeded waiting for a shared database statement'), { code: DATABASE_BUSY });
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08006',
  '53300',
  DATABASE_BUSY,
]);

/** PostgreSQL unreachable, restarting or out of connections. */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  if (code && UNAVAILABLE_CODES.has(code)) return true;
  return /timeout exceeded when trying to connect|Connection terminated/i.test(message ?? '');
}

// deadlock_detected, serialization_failure, lock_not_available (lock_timeout), query_canceled (statement_timeout).
const LOCK_CONFLICT_CODES = new Set(['40P01', '40001', '55P03', '57014']);

/**
 * A statement that failed on what other transactions held (a deadlock, a lock or statement timeout): run alone,
 * without the rows other callers' items added to a shared statement, it can succeed: the statement batcher retries it alone.
 */
export function isLockConflict(error: unknown): boolean {
  const { code } = (error ?? {}) as { code?: string };
  return code !== undefined && LOCK_CONFLICT_CODES.has(code);
}

/** Fastify's error body, for route response schemas. */
export const ErrorResponseSchema = Type.Object({ statusCode: Type.Integer(), error: Type.String(), message: Type.String() });

/** ErrorResponseSchema with a line saying when that status is answered (the OpenAPI response's description). */
export function errorResponse(description: string) {
  return Type.Object(ErrorResponseSchema.properties, { description });
}

/** Answers in Fastify's `{statusCode, error, message}` shape, the one every errand error uses. */
export function sendError(reply: FastifyReply, statusCode: number, message: string) {
  return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message });
}

/** 4xx pass through in Fastify's shape; a down database is a 503; anything else a 500 without internals. */
export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  if (error.statusCode && error.statusCode < 500) {
    return sendError(reply, error.statusCode, error.message);
  }
  if (isDatabaseUnavailable(error)) {
    request.log.error({ err: error }, 'database unavailable');
    return sendError(reply, 503, 'database unavailable, try again later');
  }
  request.log.error({ err: error }, 'request failed');
  return sendError(reply, 500, 'internal error');
}

/** Fastify's own 404 handler logs the raw URL, query string (and so any token) included; this one does not. */
export function notFoundHandler(request: FastifyRequest, reply: FastifyReply) {
  return sendError(reply, 404, `Route ${request.method}:${pathOnly(request.url)} not found`);
}

/**
 * onRoute hook: documents the answers any route may get from Fastify and
 * errorHandler rather than from its own handler — 400 when an input schema
 * refuses the request, 413 over the body limit, 500. A route's own statuses
 * (and its own words for these) are declared in its schema and kept.
 */
export function addStandardErrorResponses(route: RouteOptions): void {
  const schema = route.schema ?? {};
  if (schema.hide) return;
  const response: Record<string | number, unknown> = { ...(schema.response as Record<string, unknown> | undefined) };
  const add = (status: number, description: string) => {
    response[status] ??= errorResponse(description);
  };
  if (schema.body || schema.querystring || schema.params || schema.headers) add(400, 'the request does not match its schema');
  if (schema.body) add(413, 'body over the size limit');
  add(500, 'internal error (details are in the log, never in the answer)');
  route.schema = { ...schema, response };
}
