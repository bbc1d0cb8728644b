// The types shared by the tracing switch (./tracing.ts) and the SDK it loads (./tracing-sdk.ts): apart, so neither imports the other.
import type { Telemetry } from 'bullmq';

/** The W3C trace context (`traceparent`, optionally `tracestate`) kept in an outbox row and handed to its job. */
export type TraceContext = Record<string, string>;

export interface TracingHooks {
  /** The active context as W3C headers, or null outside any span. */
  currentContext(): TraceContext | null;
  /** Runs `work` inside a new active span named `name`. */
  inSpan<T>(name: string, attributes: Record<string, string>, work: () => Promise<T>): Promise<T>;
  /** Runs `work` with `traceContext` (W3C headers) as the active context. */
  inContext<T>(traceContext: TraceContext, work: () => T): T;
  /** traceId/spanId of the active span for a log line, or {} outside any span. */
  logFields: () => Record<string, string>;
  /** BullMQ's `telemetry` option (bullmq-otel). */
  bullmqTelemetry: Telemetry;
  /** Exports what is buffered and stops the SDK. */
  shutdown(): Promise<void>;
}
