"""Metrics in tests: the suite's instruments collected in memory, and their data points."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.settings import Settings
from common.telemetry import configure_telemetry


@contextlib.contextmanager
def collected_metrics(settings: Settings) -> Iterator[InMemoryMetricReader]:
    """An active telemetry configuration whose metrics (and nothing else) go to the reader."""
    reader = InMemoryMetricReader()
    quiet = settings.model_copy(update={"telemetry_exporter": "off", "metrics_exporter": "off"})
    telemetry = configure_telemetry(
        quiet, metric_readers=[reader], set_global=False, instrument=False
    )
    try:
        yield reader
    finally:
        telemetry.shutdown()


def data_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of metric ``name`` collected so far (empty when it has none)."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
