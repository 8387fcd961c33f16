"""Retries with exponential backoff and full jitter, and a small circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger("mediagrid.resilience")


def backoff_delay(attempt: int, base: float, cap: float = 30.0) -> float:
    """Full-jitter delay before retry number ``attempt`` (1-based): U(0, min(cap, base*2^(n-1)))."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base_delay: float,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    max_delay: float = 30.0,
) -> T:
    """Run ``operation`` up to ``attempts`` times, sleeping with full jitter between tries."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except retry_on as exc:
            if attempt == attempts:
                raise
            delay = backoff_delay(attempt, base_delay, max_delay)
            log.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.2fs",
                what,
                attempt,
                attempts,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class CircuitOpen(Unavailable):
    """The dependency failed repeatedly; calls are refused until it cools down."""

    default_reason = "CIRCUIT_OPEN"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; lets one trial call through after ``cooldown``."""

    def __init__(self, name: str, *, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if time.monotonic() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        if self.state == "open":
            raise CircuitOpen(
                f"{self.name} is unavailable (circuit open)", metadata={"dependency": self.name}
            )

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self.threshold or self._opened_at is not None:
            self._opened_at = time.monotonic()

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        self.before_call()
        try:
            result = await operation()
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result
