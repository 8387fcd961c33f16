"""Telemetry: spans for RPCs (server and client, one trace) and queries; the service resource."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common import telemetry as telemetry_module
from common.runtime import running_suite
from common.settings import Settings
from common.telemetry import Telemetry, configure_telemetry, get_meter, get_tracer

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(
    settings: Settings, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> Iterator[Telemetry]:
    configured = configure_telemetry(
        settings.model_copy(update={"service_name": "mediagrid-test"}),
        span_exporter=exporter,
        metric_readers=[reader],
        set_global=False,
    )
    try:
        yield configured
    finally:
        configured.shutdown()


async def test_an_rpc_produces_linked_client_and_server_spans(
    settings: Settings, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async with (
        running_suite(settings, specs=[], port=0, interceptors=telemetry.server_interceptors()) as (
            server,
            _ctx,
        ),
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING

    spans = exporter.get_finished_spans()
    server_spans = [s for s in spans if s.kind == SpanKind.SERVER and s.name == HEALTH_CHECK]
    client_spans = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == HEALTH_CHECK]
    assert len(server_spans) == 1 and len(client_spans) == 1
    server_span, client_span = server_spans[0], client_spans[0]
    # The client injected its trace context and the server continued it.
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.resource.attributes["service.name"] == "mediagrid-test"
    # The database health check ran through the instrumented asyncpg.
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" for s in spans)


def test_shutdown_undoes_the_global_instrumentation(settings: Settings) -> None:
    import asyncpg

    original_channel = grpc.aio.insecure_channel
    original_execute = asyncpg.Connection.execute
    configured = configure_telemetry(
        settings, span_exporter=InMemorySpanExporter(), set_global=False
    )
    assert grpc.aio.insecure_channel is not original_channel
    configured.shutdown()
    assert grpc.aio.insecure_channel is original_channel
    assert asyncpg.Connection.execute is original_execute
    assert telemetry_module.active() is None


async def test_services_get_tracers_and_meters_from_the_active_configuration(
    telemetry: Telemetry, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    with get_tracer("services.demo").start_as_current_span("demo.work"):
        pass
    get_meter("services.demo").create_counter("demo.jobs").add(3)
    assert [s.name for s in exporter.get_finished_spans()] == ["demo.work"]
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "demo.jobs"
        for point in metric.data.data_points
    ]
    assert points == [3]


def test_off_means_no_interceptors_and_no_op_tracers(settings: Settings) -> None:
    configured = configure_telemetry(settings.model_copy(update={"telemetry_exporter": "off"}))
    try:
        assert not configured.enabled
        assert configured.server_interceptors() == []
        span = get_tracer("x").start_span("nothing")
        assert not span.get_span_context().is_valid
    finally:
        configured.shutdown()


async def test_s3_calls_are_client_spans(
    settings: Settings, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    from botocore.exceptions import ClientError

    from common.aws import AwsClients

    async with AwsClients(settings).s3() as s3:
        await s3.create_bucket(Bucket="traced-bucket")
        await s3.put_object(Bucket="traced-bucket", Key="k", Body=b"v")
        with pytest.raises(ClientError):
            await s3.get_object(Bucket="traced-bucket", Key="missing")
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("S3.")}
    assert {"S3.CreateBucket", "S3.PutObject", "S3.GetObject"} <= set(spans)
    put = spans["S3.PutObject"]
    assert put.kind == SpanKind.CLIENT
    assert put.attributes is not None
    assert put.attributes["aws.s3.bucket"] == "traced-bucket"
    assert put.attributes["http.response.status_code"] == 200
    assert not spans["S3.GetObject"].status.is_ok


async def test_the_synchronous_clients_calls_are_spans_of_the_callers_trace(
    settings: Settings, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    import asyncio

    from common.aws import AwsClients

    clients = AwsClients(settings)
    async with clients.s3() as s3:
        await s3.create_bucket(Bucket="traced-sync")
    sync = clients.sync_s3()
    with get_tracer("test").start_as_current_span("download") as parent:
        await asyncio.to_thread(sync.put_object, Bucket="traced-sync", Key="k", Body=b"v")
        body = await asyncio.to_thread(lambda: sync.get_object(Bucket="traced-sync", Key="k"))
        assert body["Body"].read() == b"v"
    spans = [s for s in exporter.get_finished_spans() if s.name in ("S3.PutObject", "S3.GetObject")]
    assert sorted(s.name for s in spans) == ["S3.GetObject", "S3.PutObject"]
    trace_id = parent.get_span_context().trace_id
    assert all(s.context is not None and s.context.trace_id == trace_id for s in spans)
    assert all(
        s.parent is not None and s.parent.span_id == parent.get_span_context().span_id
        for s in spans
    )
