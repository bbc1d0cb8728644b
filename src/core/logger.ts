import { pino, type DestinationStream } from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { traceLogMixin } from './tracing.js';

// Fastify's logger interface, which a pino logger satisfies: request loggers and the root logger are interchangeable.
export type Logger = FastifyBaseLogger;

/** `alice@example.com` → `a***@example.com`: enough to correlate, not enough to identify. */
export function maskEmail(email: string): string {
  const at = email.lastIndexOf('@');
  if (at < 1) return '***';
  return `${email[0]}***${email.slice(at)}`;
}

/** Masks every address inside free text, e.g. an SMTP reply quoting the rejected recipient. */
export function maskEmailsIn(text: string): string {
  return text.replace(/[^\s<>()"',;:@]+@[^\s<>()"',;:]+/g, (address) => maskEmail(address));
}

/** Drops the query string: verification and tracking tokens travel there. */
export function pathOnly(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  // Only when tracing is on: a mixin runs on every line.
  const mixin = traceLogMixin();
  return pino(
    {
      level,
      ...(mixin ? { mixin } : {}),
      base: { pid: process.pid, service: 'errand' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Belt and braces: these keys never reach a log line even if someone logs them.
      redact: {
        paths: [
          'token',
          '*.token',
          'email',
          '*.email',
          'link',
          '*.link',
          'password',
          'secret',
          'req.headers.authorization',
          'req.headers["webhook-signature"]',
        ],
        censor: '[redacted]',
      },
      serializers: {
        req: (req: { id: string; method: string; url: string }) => ({ reqId: req.id, method: req.method, url: pathOnly(req.url) }),
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
        err: pino.stdSerializers.err,
      },
    },
    // Asynchronous stdout: lines written while a write is in flight go out together in the next one, instead
    // of one blocking write(2) per line on the request path. pino flushes what is left when the process exits.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** Whether `log` writes info lines (Fastify's logger type does not expose pino's isLevelEnabled). */
export function logsInfo(log: Logger): boolean {
  return (pino.levels.values[log.level] ?? Infinity) <= pino.levels.values.info;
}
