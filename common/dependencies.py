"""The dependencies of one process (PostgreSQL, S3, peer services), each with its breaker.

Created once per process by the runtime (``AppContext.dependencies``), so every service
served by the process shares one view of each dependency. Breaker states are exported as
metrics: ``mediagrid.breaker.state`` (0 closed, 1 half-open, 2 open) and
``mediagrid.breaker.transitions``, both labelled with the dependency, and every call's
duration and outcome as ``mediagrid.dependency.duration``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from opentelemetry import metrics

from common import db
from common.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    CircuitBreaker,
    Dependency,
    dependency_failed,
)
from common.settings import Settings
from common.telemetry import get_meter

DATABASE = "postgresql"
S3 = "s3"

STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# Answers of a peer that say the peer (not the request) is in trouble.
PEER_DOWN_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def peer_failed(exc: BaseException) -> bool:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in PEER_DOWN_CODES
    return dependency_failed(exc)


def breaker_policy(settings: Settings) -> BreakerPolicy:
    return BreakerPolicy(
        window_seconds=settings.breaker_window_seconds,
        min_calls=settings.breaker_min_calls,
        failure_rate=settings.breaker_failure_rate,
        open_seconds=settings.breaker_open_seconds,
        half_open_probes=settings.breaker_half_open_probes,
        consecutive_timeouts=settings.breaker_consecutive_timeouts,
    )


class Dependencies:
    """``database``, ``s3`` and ``peer(service)``: the process's outgoing paths."""

    def __init__(self, settings: Settings, meter: metrics.Meter | None = None) -> None:
        self.settings = settings
        self.policy = breaker_policy(settings)
        meter = meter or get_meter("mediagrid.resilience")
        self._meter = meter
        self._transitions = meter.create_counter(
            "mediagrid.breaker.transitions",
            description="Circuit breaker state changes, per dependency and new state.",
        )
        meter.create_observable_gauge(
            "mediagrid.breaker.state",
            callbacks=[self._observe],
            description="Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
        )
        self._calls = meter.create_histogram(
            "mediagrid.dependency.duration",
            unit="s",
            description="Outgoing calls per dependency and outcome (ok, error, timeout, "
            "refused by an open breaker).",
        )
        self._all: dict[str, Dependency] = {}
        self.database = self._add(
            DATABASE,
            reason="DATABASE_UNAVAILABLE",
            timeout=settings.db_call_timeout_seconds,
            is_failure=db.connection_failed,
        )
        self.s3 = self._add(
            S3,
            reason="S3_UNAVAILABLE",
            timeout=settings.s3_call_timeout_seconds,
            is_failure=dependency_failed,
        )

    def _add(self, name: str, *, reason: str, timeout: float, is_failure: Any) -> Dependency:
        breaker = CircuitBreaker(
            name,
            self.policy,
            reason=reason,
            is_failure=is_failure,
            listeners=[self._changed],
        )
        dependency = Dependency(
            name, reason=reason, timeout=timeout, breaker=breaker, observe=self._called
        )
        self._all[name] = dependency
        return dependency

    def peer(self, service: str) -> Dependency:
        """The dependency on peer ``service`` ("users", "jobs", "files"), made on first use."""
        existing = self._all.get(service)
        if existing is not None:
            return existing
        return self._add(
            service,
            reason="DEPENDENCY_UNAVAILABLE",
            timeout=self.settings.peer_call_timeout_seconds,
            is_failure=peer_failed,
        )

    def __iter__(self) -> Iterator[Dependency]:
        return iter(list(self._all.values()))

    def states(self) -> dict[str, str]:
        return {name: dep.breaker.state for name, dep in self._all.items()}

    def _changed(self, breaker: CircuitBreaker, _old: str, new: str) -> None:
        self._transitions.add(1, {"dependency": breaker.name, "state": new})

    def watch_pool(self, pool: Any) -> None:
        """Export the database pool's connections (``mediagrid.db.pool.connections``, by
        ``state``: idle or in use) from the asyncpg pool behind ``pool``."""
        raw = getattr(pool, "raw", pool)

        def observe(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            size, idle = raw.get_size(), raw.get_idle_size()
            return [
                metrics.Observation(idle, {"state": "idle"}),
                metrics.Observation(size - idle, {"state": "used"}),
            ]

        self._meter.create_observable_gauge(
            "mediagrid.db.pool.connections",
            callbacks=[observe],
            description="Connections of this process's database pool, idle and in use.",
        )

    def _called(self, name: str, outcome: str, seconds: float) -> None:
        self._calls.record(seconds, {"dependency": name, "outcome": outcome})

    def _observe(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        for name, dep in list(self._all.items()):
            yield metrics.Observation(STATE_VALUES[dep.breaker.state], {"dependency": name})
