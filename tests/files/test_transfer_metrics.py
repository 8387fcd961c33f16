"""Transfer metrics: bytes received and sent at the gRPC edge, streams in progress."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.settings import Settings
from common.telemetry import configure_telemetry
from tests.files.conftest import PART, random_bytes, start_files


async def test_uploads_and_downloads_are_counted(suite: Any, settings: Settings) -> None:
    reader = InMemoryMetricReader()
    telemetry = configure_telemetry(
        settings.model_copy(update={"telemetry_exporter": "off", "metrics_exporter": "off"}),
        metric_readers=[reader],
        set_global=False,
        instrument=False,
    )
    try:
        files = await start_files(suite)
        data = random_bytes(2 * PART + 123)
        file, _ = await files.upload(data)
        assert await files.download(file.name) == data
        metrics = reader.get_metrics_data()
    finally:
        telemetry.shutdown()
    assert metrics is not None
    points: dict[str, dict[str, Any]] = {}
    for resource in metrics.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if not metric.name.startswith("mediagrid.files.transfer"):
                    continue
                points[metric.name] = {
                    p.attributes["direction"]: p.value for p in metric.data.data_points
                }
    assert points["mediagrid.files.transfer.bytes"] == {"upload": len(data), "download": len(data)}
    assert points["mediagrid.files.transfer.active"] == {"upload": 0, "download": 0}
