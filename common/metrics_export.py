"""Where metrics go: ``MEDIAGRID_METRICS_EXPORTER`` = off | console | prometheus | otlp | emf.

- ``prometheus``: an HTTP ``/metrics`` endpoint on ``metrics_host:metrics_port`` (the
  process's own, served from a thread by prometheus_client), for a scraper.
- ``otlp``: pushed to the OTLP/gRPC collector at ``otlp_endpoint`` every
  ``telemetry_metrics_interval_seconds``.
- ``emf``: CloudWatch Embedded Metric Format, one JSON line per metric and attribute set on
  stdout every interval; the ECS ``awslogs`` driver ships stdout to CloudWatch Logs, which
  turns the lines into CloudWatch metrics with no API calls and no credentials.
- ``console``: the SDK's readable dump on stderr, for a developer.

Unset, metrics follow ``telemetry_exporter`` (traces and metrics to the same place).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from opentelemetry.sdk.metrics import Counter
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)

from common.settings import Settings

log = logging.getLogger("mediagrid.telemetry")

EMF_NAMESPACE = "mediagrid"
# CloudWatch limits: 30 dimensions per set, 100 metrics per directive, 100 values per
# metric, 1 KiB dimension values.
EMF_MAX_DIMENSIONS = 30
EMF_MAX_VALUES = 100
# Attributes the alarms and the dashboard in deploy/aws group by, each per service.
ROLLUP_KEYS = (
    "rpc.grpc.status_code",
    "mediagrid.rpc.streaming",
    "outcome",
    "dependency",
    "state",
)
EMF_MAX_VALUE_CHARS = 1024

# OpenTelemetry units (UCUM) that CloudWatch knows under another name.
_EMF_UNITS = {
    "s": "Seconds",
    "ms": "Milliseconds",
    "us": "Microseconds",
    "By": "Bytes",
    "KiBy": "Kilobytes",
    "MiBy": "Megabytes",
    "1": "Count",
    "{call}": "Count",
    "{request}": "Count",
    "{job}": "Count",
}


def metrics_target(settings: Settings) -> str:
    """The exporter metrics go to (``metrics_exporter``, else ``telemetry_exporter``)."""
    return settings.metrics_exporter or settings.telemetry_exporter


@dataclass
class MetricsExport:
    """The reader to give the MeterProvider and how to stop what it started."""

    reader: MetricReader
    close: Callable[[], None] = lambda: None
    where: str = ""


def metric_export(settings: Settings, *, stream: IO[str] | None = None) -> MetricsExport | None:
    """The metric reader for the configured exporter, or None when metrics are off."""
    target = metrics_target(settings)
    interval_ms = settings.telemetry_metrics_interval_seconds * 1000
    if target == "off":
        return None
    if target == "prometheus":
        return _prometheus(settings)
    if target == "emf":
        exporter = EmfMetricExporter(stream=stream, service=settings.service_name)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)
        return MetricsExport(reader, where="EMF lines on stdout")
    if target == "console":
        console = PeriodicExportingMetricReader(
            ConsoleMetricExporter(out=sys.stderr), export_interval_millis=interval_ms
        )
        return MetricsExport(console, where="the console")
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    otlp = OTLPMetricExporter(
        endpoint=settings.otlp_endpoint, insecure=settings.otlp_endpoint.startswith("http://")
    )
    return MetricsExport(
        PeriodicExportingMetricReader(otlp, export_interval_millis=interval_ms),
        where=settings.otlp_endpoint,
    )


def _prometheus(settings: Settings) -> MetricsExport:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, start_http_server

    reader = PrometheusMetricReader()
    try:
        server, thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY
        )
    except OSError as exc:
        reader.shutdown()
        raise OSError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc} "
            "(set MEDIAGRID_METRICS_PORT to a free port)"
        ) from exc

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    port = server.server_address[1]
    return MetricsExport(
        reader, close=close, where=f"http://{settings.metrics_host}:{port}/metrics"
    )


# Instrument kinds exported as deltas (what a CloudWatch Sum adds up); gauges and up-down
# counters stay cumulative (their current value).
_DELTA_KINDS = (Counter, HistogramInstrument)


class EmfMetricExporter(MetricExporter):
    """Writes each data point as one CloudWatch Embedded Metric Format line.

    Counters are exported as the delta since the previous export (what a CloudWatch Sum
    statistic adds up); gauges and up-down counters as their current value; histograms as
    ``<name>.count`` and ``<name>.sum`` (exact) and ``<name>`` itself as an array of at most
    100 values that reproduces the bucket distribution, from which CloudWatch computes
    percentiles (p99 alarms). Attributes become dimensions, together with ``service.name``.
    """

    def __init__(self, *, stream: IO[str] | None = None, service: str = "mediagrid") -> None:
        super().__init__(
            preferred_temporality={kind: AggregationTemporality.DELTA for kind in _DELTA_KINDS}
        )
        self._stream = stream
        self.service = service

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any
    ) -> MetricExportResult:
        stream = self._stream or sys.stdout
        try:
            for line in emf_lines(metrics_data, self.service):
                stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed stdout must not kill the exporter
            log.warning("EMF export failed: %s", exc)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        return None


def emf_lines(metrics_data: MetricsData, service: str) -> Iterator[str]:
    """One EMF JSON document per (metric, attribute set) in ``metrics_data``."""
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                unit = _EMF_UNITS.get(metric.unit or "", "None")
                for attributes, values, at in _points(metric.name, metric.data):
                    yield json.dumps(
                        _document(service, attributes, values, unit, at),
                        separators=(",", ":"),
                    )


def histogram_values(
    bounds: Sequence[float], counts: Sequence[int], low: float, high: float
) -> list[float]:
    """At most ``EMF_MAX_VALUES`` values distributed like the histogram's buckets.

    Each bucket is represented by the middle of its range (clamped to the observed min and
    max); buckets keep their share of the values, and every non-empty bucket keeps at
    least one, so the tail a p99 alarm watches is never rounded away.
    """
    total = sum(counts)
    if total == 0:
        return []
    filled = sum(1 for c in counts if c)
    spare = EMF_MAX_VALUES - filled
    values: list[float] = []
    for index, count in enumerate(counts):
        if not count:
            continue
        lower = bounds[index - 1] if index > 0 else low
        upper = bounds[index] if index < len(bounds) else high
        lower, upper = max(lower, low), min(upper, high)
        middle = (lower + upper) / 2 if lower <= upper else high
        copies = count if total <= EMF_MAX_VALUES else 1 + (count * spare) // total
        values.extend([float(middle)] * copies)
    return values


def _points(
    name: str, data: Any
) -> Iterable[tuple[dict[str, Any], dict[str, float | list[float]], int]]:
    for point in data.data_points:
        at = int(point.time_unix_nano // 1_000_000) or int(time.time() * 1000)
        attributes = dict(point.attributes or {})
        if isinstance(data, Histogram):
            values: dict[str, float | list[float]] = {f"{name}.count": float(point.count)}
            if point.count:
                values[f"{name}.sum"] = float(point.sum)
                values[name] = histogram_values(
                    point.explicit_bounds, point.bucket_counts, point.min, point.max
                )
            yield attributes, values, at
        elif isinstance(data, Sum | Gauge):
            yield attributes, {name: float(point.value)}, at


def dimension_sets(dimensions: dict[str, str]) -> list[list[str]]:
    """Every attribute, plus roll-ups per service and per service and one ``ROLLUP_KEYS``
    attribute: CloudWatch does not aggregate across dimensions, and alarms (error rate and
    p99 per service, DEAD jobs, an open breaker) need these totals."""
    sets = [sorted(dimensions), ["service.name"]]
    sets += [["service.name", key] for key in ROLLUP_KEYS if key in dimensions]
    unique: list[list[str]] = []
    for candidate in sets:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def _document(
    service: str,
    attributes: dict[str, Any],
    values: dict[str, float | list[float]],
    unit: str,
    at: int,
) -> dict[str, Any]:
    dimensions = {"service.name": service}
    for key, value in attributes.items():
        if key not in values and len(dimensions) < EMF_MAX_DIMENSIONS:
            dimensions[str(key)] = str(value)[:EMF_MAX_VALUE_CHARS]
    metrics = [
        {"Name": name, "Unit": "Count" if name.endswith(".count") else unit} for name in values
    ]
    return {
        "_aws": {
            "Timestamp": at,
            "CloudWatchMetrics": [
                {
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": dimension_sets(dimensions),
                    "Metrics": metrics,
                }
            ],
        },
        **dimensions,
        **values,
    }
