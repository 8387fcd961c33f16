"""A job carries the trace of the request that created it into the worker that runs it.

CreateJob and CreateBatch store the W3C trace context (``traceparent``/``tracestate``) of
the current span with the jobs; ClaimJobs hands it to the worker, whose run of the job is a
span in that trace. So an upload, the probe job it creates and the thumbnail job the probe
creates read as one trace. Without telemetry there is no current span and nothing is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace

from common.telemetry import active, get_tracer


def current_trace_context() -> dict[str, str] | None:
    """The current span's context as W3C headers, or None outside a recorded span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def tracing_on() -> bool:
    """Whether a span could be recorded: the active telemetry configuration traces, or a
    tracer provider was set globally. Otherwise a worker runs its jobs without entering a
    span at all, which a non-recording span would cost on every job for nothing."""
    configured = active()
    if configured is not None and configured.tracer_provider is not None:
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextlib.contextmanager
def job_span(
    carrier: Mapping[str, str], *, name: str, job_type: str, attempt: int
) -> Iterator[trace.Span]:
    """A span for one run of job ``name``, a child of the creating request's span when
    ``carrier`` holds its context (otherwise the start of a new trace)."""
    parent = propagate.extract(dict(carrier)) if carrier else None
    with get_tracer("mediagrid.worker").start_as_current_span(
        f"job {job_type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "mediagrid.job": name,
            "mediagrid.job.type": job_type,
            "mediagrid.job.attempt": attempt,
        },
    ) as span:
        yield span
