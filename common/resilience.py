"""Retries with exponential backoff and full jitter, circuit breakers, and ``Dependency``:
the one path every outgoing call takes (a breaker, a time bound, an honest UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from common import deadlines
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


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
# How finely the failure-rate window is sliced: outcomes older than the window drop out
# one slice at a time, and memory stays constant however many calls go through.
_SLICES = 10


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how it probes its way back."""

    window_seconds: float = 10.0
    min_calls: int = 5
    failure_rate: float = 0.5
    open_seconds: float = 5.0
    half_open_probes: int = 1
    # Calls in a row that each ran out of their whole time bound open the circuit whatever
    # the window holds: a hung dependency fails each call only after its bound, too slowly
    # for ``min_calls`` of them to ever share a window.
    consecutive_timeouts: int = 3

    def __post_init__(self) -> None:
        if (
            self.window_seconds <= 0
            or self.min_calls < 1
            or self.consecutive_timeouts < 1
            or not 0 < self.failure_rate <= 1
            or self.open_seconds < 0
            or self.half_open_probes < 1
        ):
            raise ValueError(f"invalid breaker policy: {self}")


StateListener = Callable[["CircuitBreaker", str, str], None]
# (dependency, outcome: ok | error | timeout | refused, seconds) of each call.
OutcomeListener = Callable[[str, str, float], None]


class CircuitBreaker:
    """Opens when the failure rate over a sliding window reaches the policy's threshold.

    closed --rate >= failure_rate over >= min_calls calls, or consecutive_timeouts calls in a
    row that timed out--> open --open_seconds-->
    half-open: up to ``half_open_probes`` trial calls at once; as many successes close the
    circuit (with an empty window), one failure opens it again. A trial that never reports
    back frees its slot after ``open_seconds``. Outcomes of calls that started before the
    circuit opened are not trials and do not move a half-open circuit.

    ``before_call`` returns a ticket that the outcome (``record_success``,
    ``record_failure``, ``release``) hands back, so that the breaker knows which calls were
    trials.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        reason: str = CircuitOpen.default_reason,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = dependency_failed,
        listeners: Sequence[StateListener] = (),
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.reason = reason
        self.clock = clock
        self.is_failure = is_failure
        self.listeners = list(listeners)
        self._state = CLOSED
        self._opened_at = 0.0
        self._slices: deque[list[float]] = deque()  # [start, calls, failures]
        self._trials: dict[int, float] = {}  # ticket -> start
        self._trial_successes = 0
        self._timeouts_in_a_row = 0
        self._tickets = itertools.count(1)

    # --- state --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() - self._opened_at >= self.policy.open_seconds:
            self._change(HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.policy.open_seconds - self.clock())

    def counts(self) -> tuple[int, int]:
        """(calls, failures) inside the current window."""
        self._expire(self.clock())
        return (
            int(sum(s[1] for s in self._slices)),
            int(sum(s[2] for s in self._slices)),
        )

    def _change(self, new: str) -> None:
        old, self._state = self._state, new
        if new == OPEN:
            self._opened_at = self.clock()
        if new != HALF_OPEN:
            self._trials.clear()
            self._trial_successes = 0
        if new == CLOSED:
            self._slices.clear()
            self._timeouts_in_a_row = 0
        if old == new:
            return
        if new == OPEN and old == HALF_OPEN:
            log.warning(
                "circuit %s open again (a trial call failed)",
                self.name,
                extra={"dependency": self.name, "circuit": new},
            )
        elif new == OPEN:
            calls, failures = self.counts()
            log.warning(
                "circuit %s open (%d of %d calls failed in the window, the last %d in a row "
                "by running out of time)",
                self.name,
                failures,
                calls,
                self._timeouts_in_a_row,
                extra={"dependency": self.name, "circuit": new},
            )
        else:
            log.info(
                "circuit %s %s (was %s)",
                self.name,
                new,
                old,
                extra={"dependency": self.name, "circuit": new},
            )
        for listener in self.listeners:
            listener(self, old, new)

    # --- window -------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        width = self.policy.window_seconds / _SLICES
        while self._slices and self._slices[0][0] + width <= horizon:
            self._slices.popleft()

    def _count(self, failed: bool) -> None:
        now = self.clock()
        self._expire(now)
        width = self.policy.window_seconds / _SLICES
        if not self._slices or now >= self._slices[-1][0] + width:
            self._slices.append([now, 0, 0])
        current = self._slices[-1]
        current[1] += 1
        current[2] += failed

    def _tripped(self) -> bool:
        calls, failures = self.counts()
        return calls >= self.policy.min_calls and failures >= self.policy.failure_rate * calls

    # --- calls --------------------------------------------------------------------------

    def before_call(self) -> int:
        """A ticket for a call that may go out now; raises ``CircuitOpen`` otherwise."""
        state = self.state
        if state == CLOSED:
            return 0
        if state == HALF_OPEN:
            now = self.clock()
            for ticket, started in list(self._trials.items()):
                if now - started >= self.policy.open_seconds:
                    del self._trials[ticket]  # a trial that never reported back
            if len(self._trials) < self.policy.half_open_probes:
                ticket = next(self._tickets)
                self._trials[ticket] = now
                return ticket
        raise CircuitOpen(
            f"{self.name} is unavailable (circuit {state}); retry later",
            reason=self.reason,
            metadata={"dependency": self.name, "circuit": state},
            retry_after_seconds=round(max(self.retry_after(), 0.1), 3),
        )

    def record_success(self, ticket: int = 0) -> None:
        self._timeouts_in_a_row = 0
        if ticket and self._trials.pop(ticket, None) is not None:
            self._trial_successes += 1
            if self._trial_successes >= self.policy.half_open_probes:
                self._change(CLOSED)
        elif self.state == CLOSED:
            self._count(failed=False)

    def record_failure(self, ticket: int = 0, *, timed_out: bool = False) -> None:
        """``timed_out``: the call ran out of its whole bound (not an error answer)."""
        if timed_out:
            self._timeouts_in_a_row += 1
        if ticket and self._trials.pop(ticket, None) is not None:
            self._change(OPEN)
        elif self.state == CLOSED:
            self._count(failed=True)
            if self._tripped() or self._timeouts_in_a_row >= self.policy.consecutive_timeouts:
                self._change(OPEN)

    def release(self, ticket: int = 0) -> None:
        """Give back a ticket without a verdict (the call was cancelled or never went out)."""
        self._trials.pop(ticket, None)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        ticket = self.before_call()
        try:
            result = await operation()
        except Exception as exc:
            if self.is_failure(exc):
                self.record_failure(ticket)
            else:
                self.record_success(ticket)
            raise
        except BaseException:
            self.release(ticket)
            raise
        self.record_success(ticket)
        return result


class Dependency:
    """One dependency of this process (PostgreSQL, S3, a peer service) and its breaker.

    ``call`` is the path of every outgoing call: refused at once while the breaker is open,
    otherwise bounded by ``deadlines.bound(timeout)``; a call that runs out of time is
    UNAVAILABLE with this dependency's ``reason`` and a RetryInfo, and counts as a failure.
    """

    def __init__(
        self,
        name: str,
        *,
        reason: str,
        timeout: float,
        breaker: CircuitBreaker,
        retry_after_seconds: float = 1.0,
        observe: OutcomeListener | None = None,
    ) -> None:
        self.name = name
        self.reason = reason
        self.timeout = timeout
        self.breaker = breaker
        self.retry_after_seconds = retry_after_seconds
        self.observe = observe

    @property
    def available(self) -> bool:
        """False while the breaker is open (health reports the dependency as down)."""
        return self.breaker.state != OPEN

    def unavailable(self, message: str, **metadata: object) -> Unavailable:
        return Unavailable(
            message,
            reason=self.reason,
            metadata={"dependency": self.name, **metadata},
            retry_after_seconds=self.retry_after_seconds,
        )

    async def call(
        self, operation: Callable[[], Awaitable[T]], *, what: str, cap: float | None = None
    ) -> T:
        """Run ``operation`` through the breaker within the bound (``cap`` overrides the
        dependency's own limit, e.g. for a part transfer); see the class docstring."""
        cap = self.timeout if cap is None else cap
        limit = deadlines.bound(cap, dependency=self.name)
        try:
            ticket = self.breaker.before_call()
        except CircuitOpen:
            self._observed("refused", 0.0)
            raise
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                result = await operation()
        except TimeoutError as exc:
            # Cut short by the caller's deadline rather than by our own limit, slowness is
            # not proof that the dependency is down: no verdict.
            if limit < cap:
                self.breaker.release(ticket)
            else:
                self.breaker.record_failure(ticket, timed_out=True)
            self._observed("timeout", time.perf_counter() - started)
            raise self.unavailable(
                f"{self.name} did not answer within {limit:.1f}s ({what}); retry later",
                operation=what,
                timeout_seconds=round(limit, 3),
            ) from exc
        except Exception as exc:
            if self.breaker.is_failure(exc):
                self.breaker.record_failure(ticket)
                self._observed("error", time.perf_counter() - started)
            else:
                self.breaker.record_success(ticket)
                self._observed("ok", time.perf_counter() - started)
            raise
        except BaseException:
            self.breaker.release(ticket)
            raise
        self.breaker.record_success(ticket)
        self._observed("ok", time.perf_counter() - started)
        return result

    def _observed(self, outcome: str, seconds: float) -> None:
        if self.observe is not None:
            self.observe(self.name, outcome, seconds)
