/**
 * Tracing switch. Off (OTEL_EXPORTER_OTLP_ENDPOINT unset): this module imports
 * nothing from OpenTelemetry and every helper below is a null or a direct call.
 * On: `startTracing` loads ./tracing-sdk.js dynamically, before the rest of
 * errand is imported, so its instrumentations patch pg, ioredis and http first.
 */
import type { Telemetry } from 'bullmq';
import type { TraceContext, TracingHooks } from './tracing-hooks.js';

export type { TraceContext, TracingHooks } from './tracing-hooks.js';

let hooks: TracingHooks | undefined;

/** Starts OpenTelemetry when `endpoint` is set; undefined (and nothing loaded) otherwise. */
export async function startTracing(endpoint: string | undefined): Promise<TracingHooks | undefined> {
  if (!endpoint) return undefined;
  const { startOpenTelemetry } = await import('./tracing-sdk.js');
  hooks = startOpenTelemetry();
  return hooks;
}

export function tracingOn(): boolean {
  return hooks !== undefined;
}

/** The context to record with an outbox row: null when tracing is off. */
export function activeTraceContext(): TraceContext | null {
  return hooks === undefined ? null : hooks.currentContext();
}

export function inSpan<T>(name: string, attributes: Record<string, string>, work: () => Promise<T>): Promise<T> {
  return hooks === undefined ? work() : hooks.inSpan(name, attributes, work);
}

/** Runs `work` within a stored trace context; a direct call when tracing is off or there is none. */
export function inTraceContext<T>(traceContext: TraceContext | null | undefined, work: () => T): T {
  return hooks === undefined || !traceContext ? work() : hooks.inContext(traceContext, work);
}

/** The `telemetry` option for a BullMQ Queue or Worker: absent when tracing is off. */
export function queueTelemetry(): { telemetry?: Telemetry } {
  return hooks === undefined ? {} : { telemetry: hooks.bullmqTelemetry };
}

/** A pino `mixin` adding traceId/spanId, or undefined when tracing is off (no per-line cost). */
export function traceLogMixin(): (() => Record<string, string>) | undefined {
  return hooks?.logFields;
}

/**
 * A job's telemetry metadata for a stored context, in bullmq-otel's format (the
 * JSON of the propagation headers): the consumer span then continues that trace.
 */
export function jobTelemetryFor(traceContext: TraceContext | null | undefined): { telemetry?: { metadata: string } } {
  return traceContext ? { telemetry: { metadata: JSON.stringify(traceContext) } } : {};
}
