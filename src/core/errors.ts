import { STATUS_CODES } from 'node:http';
import { pathOnly } from './logger.js';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006', '53300']);

/** PostgreSQL unreachable, restarting or out of connections. */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  if (code && UNAVAILABLE_CODES.has(code)) return true;
  return /timeout exceeded when trying to connect|Connection terminated/i.test(message ?? '');
}

/** 4xx pass through in Fastify's shape; a down database is a 503; anything else a 500 without internals. */
export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  if (error.statusCode && error.statusCode < 500) {
    return reply.code(error.statusCode).send({ statusCode: error.statusCode, error: httpErrorName(error.statusCode), message: error.message });
  }
  if (isDatabaseUnavailable(error)) {
    request.log.error({ err: error }, 'database unavailable');
    return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', message: 'database unavailable, try again later' });
  }
  request.log.error({ err: error }, 'request failed');
  return reply.code(500).send({ statusCode: 500, error: 'Internal Server Error', message: 'internal error' });
}

function httpErrorName(statusCode: number): string {
  return STATUS_CODES[statusCode] ?? 'Error';
}

/** Fastify's own 404 handler logs the raw URL, query string (and so any token) included; this one does not. */
export function notFoundHandler(request: FastifyRequest, reply: FastifyReply) {
  return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `Route ${request.method}:${pathOnly(request.url)} not found` });
}
