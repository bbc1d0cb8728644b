/**
 * Loaded only when tracing is on (see ./tracing.ts). The exporter, its
 * protocol, batch delay, sampler and resource follow the standard OTEL_*
 * variables; errand only chooses the instrumentations.
 */
import { register } from 'node:module';
import { context, isSpanContextValid, ROOT_CONTEXT, propagation, SpanStatusCode, trace } from '@opentelemetry/api';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { FastifyOtelInstrumentation } from '@fastify/otel';
import { BullMQOtel } from 'bullmq-otel';
import type { TraceContext, TracingHooks } from './tracing-hooks.js';

// Probe and scrape paths would be most of the traces and say nothing.
const UNTRACED_PATHS = new Set(['/metrics', '/healthz', '/readyz']);

// Query parameters whose values never reach the tracing backend: the verification and tracking links carry their
// secret in `?token=`. The rest is the HTTP instrumentation's own default list (replaced, not extended, by the option).
export const REDACTED_QUERY_PARAMS = [
  'token',
  'sig',
  'Signature',
  'AWSAccessKeyId',
  'X-Goog-Signature',
  'X-Amz-Signature',
  'X-Amz-Credential',
  'X-Amz-Security-Token',
];

/** The path of a request URL: @fastify/otel records `request.url` (with its query) as `url.path`; the query is the HTTP span's, redacted. */
export function pathOnly(url: string): string {
  return url.split('?', 1)[0] ?? '';
}

export function startOpenTelemetry(): TracingHooks {
  // errand imports ioredis rather than requiring it: its instrumentation needs the ESM import hook too. Limited to
  // ioredis (pg is patched through require already): wrapping every ES module would add seconds to start-up.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url, { data: { include: ['ioredis'] } });
  const sdk = new NodeSDK({
    ...(process.env.OTEL_SERVICE_NAME ? {} : { serviceName: 'errand' }),
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (req) => UNTRACED_PATHS.has(pathOnly(req.url ?? '')),
        redactedQueryParamsServer: REDACTED_QUERY_PARAMS,
        redactedQueryParams: REDACTED_QUERY_PARAMS,
      }),
      new FastifyOtelInstrumentation({
        registerOnInitialization: true,
        requestHook: (span, request) => span.setAttribute('url.path', pathOnly(request.url)),
      }),
      // Only inside a trace: the relay's polls and BullMQ's blocking reads would otherwise each be a trace of their own.
      new PgInstrumentation({ requireParentSpan: true }),
      new IORedisInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  const tracer = trace.getTracer('errand');

  return {
    currentContext() {
      const headers: Record<string, string> = {};
      propagation.inject(context.active(), headers);
      if (!headers.traceparent) return null;
      const kept: TraceContext = { traceparent: headers.traceparent };
      if (headers.tracestate) kept.tracestate = headers.tracestate;
      return kept;
    },
    inSpan(name, attributes, work) {
      return tracer.startActiveSpan(name, { attributes }, async (span) => {
        try {
          return await work();
        } catch (err) {
          span.recordException(err as Error);
          span.setStatus({ code: SpanStatusCode.ERROR });
          throw err;
        } finally {
          span.end();
        }
      });
    },
    inContext(traceContext, work) {
      return context.with(propagation.extract(ROOT_CONTEXT, traceContext), work);
    },
    logFields: (): Record<string, string> => {
      const spanContext = trace.getSpan(context.active())?.spanContext();
      return spanContext && isSpanContextValid(spanContext) ? { traceId: spanContext.traceId, spanId: spanContext.spanId } : {};
    },
    bullmqTelemetry: new BullMQOtel({ tracerName: 'errand-bullmq' }),
    shutdown: () => sdk.shutdown(),
  };
}
