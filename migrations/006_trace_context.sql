-- The W3C trace context ({traceparent, tracestate}) active when the row was
-- written, so a job published later by the relay still joins the trace of the
-- request that produced it. Null when tracing is off.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
