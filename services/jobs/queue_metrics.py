"""Queue depth and the oldest waiting job as observable metrics, from one periodic query.

``mediagrid.jobs.queue_depth`` (jobs per ``type`` and ``state``: queued, scheduled, running)
and ``mediagrid.jobs.oldest_queued_age`` (seconds the longest-waiting ready job has waited,
per ``type``). Each also carries ``type="all"``, the total, so that a roll-up over types
(CloudWatch's per-service dimension set, a dashboard) reads the whole queue with Maximum.

The gauges read a snapshot that a background loop refreshes every
``job_metrics_interval_seconds``; collecting metrics never touches the database. Without a
metrics exporter the loop does not run at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import asyncpg
from opentelemetry import metrics

from common.db import Queries, SuitePool, as_suite_pool
from common.errors import Unavailable

log = logging.getLogger("mediagrid.jobs")

Q = Queries(Path(__file__).parent / "sql" / "metrics.sql")

ALL_TYPES = "all"
STATES = ("queued", "scheduled", "running")


class QueueGauges:
    def __init__(self, pool: asyncpg.Pool | SuitePool, meter: metrics.Meter) -> None:
        self.pool = as_suite_pool(pool)
        self.depths: dict[tuple[str, str], int] = {}
        self.oldest: dict[str, float] = {}
        self.refreshed = False
        meter.create_observable_gauge(
            "mediagrid.jobs.queue_depth",
            callbacks=[self._observe_depths],
            unit="{job}",
            description="Jobs per type and state (queued, scheduled, running); type=all: total.",
        )
        meter.create_observable_gauge(
            "mediagrid.jobs.oldest_queued_age",
            callbacks=[self._observe_oldest],
            unit="s",
            description="How long the longest-waiting ready job has waited, per type; "
            "type=all: overall.",
        )

    async def refresh(self) -> None:
        rows = await self.pool.fetch(Q.queue_gauges, idempotent=True, cap=self.pool.long_cap)
        depths: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[str, float] = {ALL_TYPES: 0.0}
        for state in STATES:
            depths[(ALL_TYPES, state)] = 0
        for row in rows:
            job_type, state, jobs = str(row["type"]), str(row["state"]), int(row["jobs"])
            depths[(job_type, state)] += jobs
            depths[(ALL_TYPES, state)] += jobs
            age = max(float(row["oldest_seconds"]), 0.0)
            if state == "queued":
                oldest[job_type] = max(oldest.get(job_type, 0.0), age)
                oldest[ALL_TYPES] = max(oldest[ALL_TYPES], age)
        self.depths, self.oldest, self.refreshed = dict(depths), oldest, True

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; a failed refresh keeps the last
        snapshot (the database may be away) and is retried at the next tick."""
        while True:
            try:
                await self.refresh()
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                TimeoutError,
                Unavailable,  # the database path's answer for an outage or an open breaker
            ) as exc:
                log.warning("queue metrics not refreshed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    def _observe_depths(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if not self.refreshed:
            return []
        return [
            metrics.Observation(n, {"type": job_type, "state": state})
            for (job_type, state), n in self.depths.items()
        ]

    def _observe_oldest(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if not self.refreshed:
            return []
        return [metrics.Observation(age, {"type": t}) for t, age in self.oldest.items()]
