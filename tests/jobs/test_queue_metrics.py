"""Queue depth and oldest-job gauges: one query's snapshot, totals under type=all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.jobs.queue_metrics import QueueGauges
from tests.jobs.jobs_support import Jobs


def observed(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def test_gauges_report_depth_per_type_and_state_with_totals(svc: Jobs) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauges = QueueGauges(svc.ctx.pool, provider.get_meter("test"))
    assert observed(reader) == {}  # nothing is reported before the first refresh
    for _ in range(3):
        await svc.create()
    await svc.create("other.type")
    spec_time = datetime.now(UTC) + timedelta(hours=1)
    scheduled = await svc.create("other.type", schedule_time=_timestamp(spec_time))
    assert scheduled.name
    await svc.claim(max_jobs=1)
    await gauges.refresh()
    points = observed(reader)
    depth = {
        (p.attributes["type"], p.attributes["state"]): p.value
        for p in points["mediagrid.jobs.queue_depth"]
    }
    assert depth[("test.noop", "queued")] == 2
    assert depth[("test.noop", "running")] == 1
    assert depth[("other.type", "queued")] == 1
    assert depth[("other.type", "scheduled")] == 1
    assert depth[("all", "queued")] == 3
    assert depth[("all", "running")] == 1
    assert depth[("all", "scheduled")] == 1
    oldest = {p.attributes["type"]: p.value for p in points["mediagrid.jobs.oldest_queued_age"]}
    assert set(oldest) == {"all", "test.noop", "other.type"}
    assert oldest["all"] == max(oldest["test.noop"], oldest["other.type"]) >= 0
    provider.shutdown()


def _timestamp(at: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return stamp
