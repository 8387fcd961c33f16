"""OpenTelemetry for the suite: tracer and meter providers from settings, plus instrumentation.

``MEDIAGRID_TELEMETRY_EXPORTER`` picks where spans go: ``off`` (the API's no-op providers,
no cost), ``console`` (stderr, for a developer) or ``otlp`` (an OTLP/gRPC collector at
``MEDIAGRID_OTLP_ENDPOINT``, e.g. the ADOT sidecar on ECS). Metrics go to the same place
unless ``MEDIAGRID_METRICS_EXPORTER`` says otherwise (prometheus, emf: see
``common.metrics_export``). Every span and metric carries the ``service.name`` resource
attribute from ``MEDIAGRID_SERVICE_NAME``.

Instrumentation:
- gRPC server: an interceptor (``Telemetry.server_interceptors()``) the runtime puts first in
  the chain, so a span covers authentication, the handler and error mapping; it continues
  the caller's W3C trace context.
- gRPC client: every ``grpc.aio`` channel (``AppContext.channel`` included) gets client
  interceptors that start a span and inject the trace context into the call's metadata.
- asyncpg: one span per query.
- S3: one client span per API call (``S3.PutObject``), through botocore's event hooks on
  the aioboto3 session (``instrument_aws_session``, called by ``common.aws``): the
  OpenTelemetry botocore instrumentation does not see aiobotocore's calls.

Services create their own spans and instruments with ``get_tracer(__name__)`` and
``get_meter(__name__)``; these work (as no-ops) when telemetry is off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from common.metrics_export import metric_export
from common.settings import Settings

log = logging.getLogger("mediagrid.telemetry")


@dataclass
class Telemetry:
    """The configured providers and the instrumentors to undo at shutdown."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _instrumentors: list[Any] = field(default_factory=list)
    # Stops what an exporter started beside the provider (the /metrics HTTP server).
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Interceptors to put first on a grpc.aio server (empty when telemetry is off)."""
        if self.tracer_provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.tracer_provider)]  # type: ignore[no-untyped-call]

    def tracer(self, name: str) -> trace.Tracer:
        return trace.get_tracer(name, tracer_provider=self.tracer_provider)

    def meter(self, name: str) -> metrics.Meter:
        return metrics.get_meter(name, meter_provider=self.meter_provider)

    def shutdown(self) -> None:
        """Flush exporters and undo the global instrumentation."""
        global _active
        for instrumentor in reversed(self._instrumentors):
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        for close in self._closers:
            close()
        self._closers.clear()
        if _active is self:
            _active = None


_active: Telemetry | None = None


def resource(settings: Settings) -> Resource:
    return Resource.create(
        {
            "service.name": settings.service_name,
            "deployment.environment": settings.environment.value,
        }
    )


def _span_exporter(settings: Settings) -> tuple[SpanExporter, bool]:
    """The span exporter for ``telemetry_exporter`` and whether spans should be batched."""
    if settings.telemetry_exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr), False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = settings.otlp_endpoint.startswith("http://")
    return OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=insecure), True


def configure_telemetry(
    settings: Settings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    instrument: bool = True,
    set_global: bool = True,
) -> Telemetry:
    """Build providers from settings (or from the given exporter/readers, for tests).

    With ``set_global`` the providers become the OpenTelemetry API's globals (once per
    process: the API refuses to replace them); tests pass ``set_global=False`` and use the
    returned object or ``get_tracer``/``get_meter``, which prefer the active configuration.
    """
    global _active
    readers = list(metric_readers)
    closers: list[Callable[[], None]] = []
    export = metric_export(settings)
    if export is not None:
        readers.append(export.reader)
        closers.append(export.close)
        log.info("telemetry: metrics to %s", export.where)
    traced = span_exporter is not None or settings.telemetry_exporter != "off"
    if not traced and not readers:
        _active = Telemetry()
        return _active
    res = resource(settings)
    tracer_provider: TracerProvider | None = None
    if traced:
        target = "the given exporter"
        batch = False
        if span_exporter is None:
            target = settings.telemetry_exporter
            span_exporter, batch = _span_exporter(settings)
        tracer_provider = TracerProvider(resource=res)
        processor = (
            BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
        )
        tracer_provider.add_span_processor(processor)
        log.info("telemetry: traces to %s as service %s", target, settings.service_name)
    meter_provider = MeterProvider(resource=res, metric_readers=readers)
    telemetry = Telemetry(tracer_provider, meter_provider, _closers=closers)
    if set_global:
        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    if instrument and tracer_provider is not None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient

        instrumentors = (GrpcAioInstrumentorClient(), AsyncPGInstrumentor())  # type: ignore[no-untyped-call]
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=tracer_provider)
            telemetry._instrumentors.append(instrumentor)
    _active = telemetry
    return telemetry


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the active configuration (the global API's when none is active)."""
    if _active is not None:
        return _active.tracer(name)
    return trace.get_tracer(name)


def get_meter(name: str) -> metrics.Meter:
    """A meter from the active configuration (the global API's when none is active)."""
    if _active is not None:
        return _active.meter(name)
    return metrics.get_meter(name)


def active() -> Telemetry | None:
    return _active


def metrics_enabled() -> bool:
    """True when metrics go somewhere: work that only feeds metrics can be skipped otherwise."""
    return _active is not None and _active.meter_provider is not None


# --- S3 --------------------------------------------------------------------------------------

_SPAN_KEY = "mediagrid_span"


def instrument_aws_session(session: Any) -> None:
    """Trace every S3 call made by clients of this aioboto3 session (no-op spans when off)."""
    events = session._session  # the aiobotocore session; its clients copy these handlers
    events.register("before-call.s3", _s3_before_call)
    events.register("after-call.s3", _s3_after_call)
    events.register("after-call-error.s3", _s3_call_error)


def instrument_sync_session(session: Any) -> None:
    """The same for a synchronous boto3 session (clients used from threads: the calls'
    spans join the trace of the RPC that started the thread through ``asyncio.to_thread``,
    which carries the context over)."""
    events = session._session  # the botocore session
    events.register("before-call.s3", _s3_before_call)
    events.register("after-call.s3", _s3_after_call)
    events.register("after-call-error.s3", _s3_call_error)


def _s3_before_call(model: Any, params: Any, context: dict[str, Any], **_: Any) -> None:
    attributes = {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": model.name}
    # Path-style addressing (common.aws forces it): the bucket is the URL's first segment.
    url = str(params.get("url", "")) if isinstance(params, dict) else ""
    bucket = urlsplit(url).path.lstrip("/").split("/", 1)[0]
    if bucket:
        attributes["aws.s3.bucket"] = bucket
    context[_SPAN_KEY] = get_tracer("mediagrid.s3").start_span(
        f"S3.{model.name}", kind=trace.SpanKind.CLIENT, attributes=attributes
    )


def _s3_after_call(http_response: Any, context: dict[str, Any], **_: Any) -> None:
    span = context.pop(_SPAN_KEY, None)
    if span is None:
        return
    status = int(getattr(http_response, "status_code", 0))
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {status}"))
    span.end()


def _s3_call_error(context: dict[str, Any], exception: BaseException, **_: Any) -> None:
    span = context.pop(_SPAN_KEY, None)
    if span is None:
        return
    span.record_exception(exception)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
    span.end()
