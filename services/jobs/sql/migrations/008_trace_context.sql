-- The W3C trace context (traceparent, tracestate) of the request that created a job, so that
-- the worker's run of it continues the same trace. NULL when the creator was not traced.
ALTER TABLE jobs.jobs ADD COLUMN trace_context jsonb;
