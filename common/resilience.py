"""Retries with exponential backoff and full jitter, and a small circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common.errors import (
    DataLoss,
    DomainError,
    Internal,
    ResourceExhausted,
    Unavailable,
)

T = TypeVar("T")
log = logging.getLogger("mediagrid.resilience")

# 2**62 * any sane base is far above any cap; bigger exponents would overflow a float.
_MAX_EXPONENT = 62


def backoff_delay(attempt: int, base: float, cap: float = 30.0) -> float:
    """Full-jitter delay before retry number ``attempt`` (1-based): U(0, min(cap, base*2^(n-1)))."""
    if attempt < 1 or base < 0 or cap < 0:
        raise ValueError(
            f"backoff_delay needs attempt >= 1, base >= 0, cap >= 0 (got {attempt}, {base}, {cap})"
        )
    ceiling = min(cap, base * float(1 << min(attempt - 1, _MAX_EXPONENT)))
    return random.uniform(0, ceiling)


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base_delay: float,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    max_delay: float = 30.0,
) -> T:
    """Run ``operation`` up to ``attempts`` times, sleeping with full jitter between tries.

    Only exceptions in ``retry_on`` are retried; the last one is re-raised. Others (and
    cancellation) propagate at once.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except retry_on as exc:
            if attempt == attempts:
                raise
            delay = backoff_delay(attempt, base_delay, max_delay)
            log.warning(
                "%s failed (attempt %d/%d): %s: %s; retrying in %.2fs",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class CircuitOpen(Unavailable):
    """The dependency failed repeatedly; calls are refused until it cools down."""

    default_reason = "CIRCUIT_OPEN"


def dependency_failed(exc: BaseException) -> bool:
    """Default failure test: an answer such as NOT_FOUND proves the dependency works."""
    if isinstance(exc, DomainError):
        return isinstance(exc, Unavailable | Internal | DataLoss | ResourceExhausted)
    return True


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; one trial call after ``cooldown``.

    closed --threshold failures--> open --cooldown--> half-open: one trial call is let
    through (others are refused); its success closes the circuit, its failure opens it for
    another cooldown. A trial that never reports back frees its slot after a cooldown.
    """

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = dependency_failed,
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise ValueError("threshold must be >= 1 and cooldown >= 0")
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.is_failure = is_failure
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go out now (claims the half-open trial)."""
        state = self.state
        if state == "closed":
            return
        now = self.clock()
        trial_busy = self._trial_started is not None and now - self._trial_started < self.cooldown
        if state == "open" or trial_busy:
            raise CircuitOpen(
                f"{self.name} is unavailable (circuit open)", metadata={"dependency": self.name}
            )
        self._trial_started = now

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("circuit %s closed", self.name)
        self._failures = 0
        self._opened_at = None
        self._trial_started = None

    def record_failure(self) -> None:
        self._failures += 1
        state = self.state
        if state == "half-open" or (state == "closed" and self._failures >= self.threshold):
            log.warning("circuit %s open after %d failure(s)", self.name, self._failures)
            self._opened_at = self.clock()
            self._trial_started = None

    def release(self) -> None:
        """Give back a half-open trial slot without a verdict (the call was cancelled)."""
        self._trial_started = None

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        self.before_call()
        try:
            result = await operation()
        except Exception as exc:
            if self.is_failure(exc):
                self.record_failure()
            else:
                self.record_success()
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()
        return result
