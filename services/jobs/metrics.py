"""Job metrics through OpenTelemetry: run and wait time histograms per type, outcome counts.

Instruments come from the active telemetry configuration (``common.telemetry.get_meter``);
without an exporter they are no-ops and cost next to nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import metrics

from common.telemetry import get_meter
from services.jobs.models import ClaimRow, Finished


class JobMetrics:
    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or get_meter("mediagrid.jobs")
        self.run_time = meter.create_histogram(
            "mediagrid.jobs.run_time",
            unit="s",
            description="Time from claim to outcome, per job type.",
        )
        self.wait_time = meter.create_histogram(
            "mediagrid.jobs.wait_time",
            unit="s",
            description="Time a job waited claimable before a worker took it, per job type.",
        )
        self.outcomes = meter.create_counter(
            "mediagrid.jobs.outcomes", description="Finished attempts per job type and outcome."
        )
        self.created = meter.create_counter(
            "mediagrid.jobs.created", description="Jobs created per type."
        )

    def claimed(self, rows: Iterable[ClaimRow]) -> None:
        for row in rows:
            self.wait_time.record(max(row["wait_seconds"], 0.0), {"type": row["type"]})

    def finished(self, finished: Iterable[Finished]) -> None:
        for item in finished:
            attributes = {"type": item.type, "outcome": item.state.value}
            self.run_time.record(max(item.run_seconds, 0.0), attributes)
            self.outcomes.add(1, attributes)

    def expired(self, job_type: str, outcome: str) -> None:
        self.outcomes.add(1, {"type": job_type, "outcome": f"expired_{outcome}"})

    def created_jobs(self, job_type: str, count: int) -> None:
        self.created.add(count, {"type": job_type})
