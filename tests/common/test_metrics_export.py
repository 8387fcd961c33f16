"""Metrics exporters: a scraped /metrics with RPC and breaker metrics; EMF lines that follow
CloudWatch's Embedded Metric Format specification."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from typing import Any

import grpc
import jsonschema
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from common.metrics_export import (
    EMF_MAX_VALUES,
    EMF_NAMESPACE,
    EmfMetricExporter,
    histogram_values,
    metrics_target,
)
from common.runtime import running_suite
from common.settings import Settings
from common.telemetry import configure_telemetry
from tests.support.hypo import relaxed
from tests.support.metrics import collected_metrics, data_points
from tests.support.proxy import free_port

# The structure CloudWatch requires of an EMF document (its published specification):
# a root "_aws" with an integer millisecond Timestamp and at least one MetricDirective.
EMF_UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
    "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]  # fmt: skip
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1},
                                        "Unit": {"enum": EMF_UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_emf(document: dict[str, Any]) -> None:
    """Schema plus the references the specification requires: every dimension names a
    string member of the root, every metric a number (or array of numbers) member."""
    jsonschema.validate(document, EMF_SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(document.get(key), str), key
                assert len(document[key]) <= 1024
        for metric in directive["Metrics"]:
            value = document.get(metric["Name"])
            assert isinstance(value, int | float) or (
                isinstance(value, list) and all(isinstance(v, int | float) for v in value)
            ), metric["Name"]


def test_emf_lines_follow_the_specification() -> None:
    stream = io.StringIO()
    reader = PeriodicExportingMetricReader(
        EmfMetricExporter(stream=stream, service="mediagrid-files"),
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test")
    meter.create_counter("mediagrid.jobs.outcomes").add(3, {"type": "video.probe"})
    histogram = meter.create_histogram("rpc.server.duration", unit="ms")
    for value in (1.5, 2.5, 40.0):
        histogram.record(value, {"rpc.method": "GetFile", "rpc.grpc.status_code": 0})
    meter.create_up_down_counter("rpc.server.active_requests").add(2, {"rpc.method": "Upload"})
    provider.force_flush()
    meter.create_counter("mediagrid.jobs.outcomes").add(1, {"type": "video.probe"})
    provider.force_flush()
    provider.shutdown()
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    for document in documents:
        check_emf(document)
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in documents} == {EMF_NAMESPACE}
    durations = [d for d in documents if "rpc.server.duration.count" in d]
    assert durations[0]["rpc.server.duration.count"] == 3
    assert durations[0]["rpc.server.duration.sum"] == pytest.approx(44.0)
    # Middles of the buckets (0, 5] and (25, 50], clamped to the observed 1.5 .. 40.
    assert sorted(durations[0]["rpc.server.duration"]) == [3.25, 3.25, 32.5]
    assert durations[0]["rpc.method"] == "GetFile"
    assert durations[0]["service.name"] == "mediagrid-files"
    assert durations[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["rpc.grpc.status_code", "rpc.method", "service.name"],
        ["service.name"],
        ["service.name", "rpc.grpc.status_code"],
    ]
    units = {m["Name"]: m["Unit"] for m in durations[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["rpc.server.duration.sum"] == "Milliseconds"
    assert units["rpc.server.duration.count"] == "Count"
    # Counters are deltas: the second export carries only what was added since the first.
    outcomes = [d["mediagrid.jobs.outcomes"] for d in documents if "mediagrid.jobs.outcomes" in d]
    assert outcomes == [3, 1]
    assert (
        next(
            d["rpc.server.active_requests"] for d in documents if "rpc.server.active_requests" in d
        )
        == 2
    )


@relaxed()
@given(
    counts=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20),
    low=st.floats(min_value=0, max_value=10),
)
def test_histogram_values_keep_the_distribution_within_the_limit(
    counts: list[int], low: float
) -> None:
    bounds = [float(b) for b in range(10, 10 * len(counts), 10)]
    high = low + 10.0 * len(counts)
    values = histogram_values(bounds, counts, low, high)
    total = sum(counts)
    assert len(values) <= EMF_MAX_VALUES
    assert all(low <= v <= high for v in values)
    if total <= EMF_MAX_VALUES:
        assert len(values) == total
    # Every non-empty bucket (the tail included) is represented.
    buckets = {min(len(bounds), sum(1 for b in bounds if v > b)) for v in values}
    assert len(buckets) == sum(1 for c in counts if c) or total == 0


def test_metrics_follow_the_trace_exporter_unless_set(settings: Settings) -> None:
    assert metrics_target(settings.model_copy(update={"telemetry_exporter": "otlp"})) == "otlp"
    chosen = settings.model_copy(update={"telemetry_exporter": "otlp", "metrics_exporter": "emf"})
    assert metrics_target(chosen) == "emf"
    assert metrics_target(settings.model_copy(update={"telemetry_exporter": "off"})) == "off"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_prometheus_endpoint_serves_rpc_and_breaker_metrics(settings: Settings) -> None:
    port = free_port()
    configured = configure_telemetry(
        settings.model_copy(
            update={
                "metrics_exporter": "prometheus",
                "metrics_port": port,
                "telemetry_exporter": "off",
            }
        ),
        set_global=False,
        instrument=False,
    )
    try:
        assert configured.tracer_provider is None  # metrics only: no spans are made
        async with (
            running_suite(settings, specs=[], port=0) as (server, _ctx),
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
            text = await asyncio.to_thread(scrape, port)
    finally:
        configured.shutdown()
    lines = text.splitlines()
    counts = [
        line
        for line in lines
        if line.startswith("rpc_server_duration_milliseconds_count")
        and 'rpc_method="Check"' in line
        and 'rpc_service="grpc.health.v1.Health"' in line
    ]
    by_status = {line.split("rpc_grpc_status_code=")[1].split('"')[1]: line for line in counts}
    assert float(by_status["0"].rsplit(" ", 1)[1]) == 3
    assert float(by_status["5"].rsplit(" ", 1)[1]) == 1  # NOT_FOUND
    assert any(
        line.startswith("mediagrid_breaker_state") and 'dependency="postgresql"' in line
        for line in lines
    )
    assert any(line.startswith("rpc_server_active_requests") for line in lines)
    pool = {
        line.split('state="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("mediagrid_db_pool_connections")
    }
    assert set(pool) == {"idle", "used"} and pool["idle"] + pool["used"] >= 1
    # The endpoint is gone with the configuration.
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port)


async def test_the_suites_channels_time_their_calls(settings: Settings) -> None:
    from common.channels import ChannelCache

    with collected_metrics(settings) as reader:
        async with running_suite(settings, specs=[], port=0) as (server, _ctx):
            channels = ChannelCache({"self": server.address}, 1 << 20)
            stub = health_pb2_grpc.HealthStub(channels("self"))
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
            watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            await watch.read()
            watch.cancel()
            await channels.close()
            await asyncio.sleep(0.1)  # the done callbacks record on the loop
        calls = {
            (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.count
            for p in data_points(reader, "rpc.client.duration")
        }
    assert calls[("Check", 0)] == 1 and calls[("Check", 5)] == 1
    assert calls[("Watch", 1)] == 1  # CANCELLED by the caller
