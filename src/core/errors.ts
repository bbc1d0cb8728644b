import { STATUS_CODES } from 'node:http';
import { pathOnly } from './logger.js';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006', '53300']);

/** PostgreSQL unreachable, restarting or out of connections. */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  if (code && UNAVAILABLE_CODES.has(code)) return true;
  return /timeout exceeded when trying to connect|Connection terminated/i.test(message ?? '');
}

/** Fastify's error body, for route response schemas. */
export const ErrorResponseSchema = Type.Object({ statusCode: Type.Integer(), error: Type.String(), message: Type.String() });

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
