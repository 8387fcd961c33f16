"""Backoff bounds, retry_async, and the circuit breaker as a state machine."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common import errors
from common.resilience import (
    CircuitBreaker,
    CircuitOpen,
    backoff_delay,
    dependency_failed,
    retry_async,
)
from tests.support.hypo import relaxed


@relaxed()
@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100, allow_nan=False),
    cap=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_backoff_delay_stays_within_full_jitter_bounds(
    attempt: int, base: float, cap: float
) -> None:
    delay = backoff_delay(attempt, base, cap)
    assert 0 <= delay <= min(cap, base * 2 ** min(attempt - 1, 62))
    assert delay <= cap


def test_backoff_delay_grows_and_jitters() -> None:
    samples = [backoff_delay(6, 1.0, 1000) for _ in range(500)]
    assert max(samples) > 16  # ceiling 32: the range is used, not a fixed value
    assert min(samples) < 16
    assert len(set(samples)) > 400
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0)


class Flaky:
    def __init__(self, failures: int, exc: type[BaseException] = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.called.set()
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "ok"


async def test_retry_async_retries_until_success(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mediagrid.resilience")
    flaky = Flaky(3)
    result = await retry_async(
        flaky, attempts=5, base_delay=0.001, retry_on=(ConnectionError,), what="calling flaky"
    )
    assert result == "ok" and flaky.calls == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("calling flaky failed (attempt 1/5): ConnectionError: failure 1")


async def test_retry_async_gives_up_with_the_last_error() -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        await retry_async(
            flaky, attempts=3, base_delay=0.001, retry_on=(ConnectionError,), what="x"
        )
    assert flaky.calls == 3


async def test_retry_async_does_not_retry_other_errors() -> None:
    flaky = Flaky(10, exc=KeyError)
    with pytest.raises(KeyError):
        await retry_async(
            flaky, attempts=5, base_delay=0.001, retry_on=(ConnectionError,), what="x"
        )
    assert flaky.calls == 1
    with pytest.raises(ValueError, match="attempts"):
        await retry_async(
            flaky, attempts=0, base_delay=0.001, retry_on=(ConnectionError,), what="x"
        )


async def test_retry_async_stops_when_cancelled() -> None:
    flaky = Flaky(1000)
    task = asyncio.create_task(
        retry_async(flaky, attempts=1000, base_delay=10, retry_on=(ConnectionError,), what="x")
    )
    await flaky.called.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flaky.calls == 1


def test_dependency_failed_counts_only_dependency_trouble() -> None:
    assert dependency_failed(ConnectionError())
    assert dependency_failed(errors.Unavailable())
    assert dependency_failed(errors.ResourceExhausted())
    assert not dependency_failed(errors.NotFound())
    assert not dependency_failed(errors.InvalidArgument())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_call_and_trial_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("s3", threshold=2, cooldown=5, clock=clock)

    async def fail() -> None:
        raise ConnectionError("down")

    async def not_found() -> None:
        raise errors.NotFound()

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(fail)
    assert caught.value.reason == "CIRCUIT_OPEN" and caught.value.metadata == {"dependency": "s3"}
    clock.now += 5
    assert breaker.state == "half-open"
    # The trial is cancelled: its slot is given back, the circuit stays half-open.
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    trial = asyncio.create_task(breaker.call(hang))
    await started.wait()
    with pytest.raises(CircuitOpen):  # only one trial at a time
        await breaker.call(fail)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    # An answer like NOT_FOUND proves the dependency works: it closes the circuit.
    with pytest.raises(errors.NotFound):
        await breaker.call(not_found)
    assert breaker.state == "closed"


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a model: closed -> open after threshold consecutive failures,
    half-open after the cooldown, one trial at a time, success closes, failure re-opens."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.threshold = 3
        self.cooldown = 10.0
        self.breaker = CircuitBreaker(
            "dep", threshold=self.threshold, cooldown=self.cooldown, clock=self.clock
        )
        self.model = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.trial_at: float | None = None

    def model_state(self) -> str:
        if self.model == "open" and self.clock.now - self.opened_at >= self.cooldown:
            return "half-open"
        return self.model

    def allowed(self) -> bool:
        state = self.model_state()
        if state == "closed":
            return True
        if state == "open":
            return False
        return self.trial_at is None or self.clock.now - self.trial_at >= self.cooldown

    @rule(seconds=st.floats(min_value=0, max_value=15))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(outcome=st.sampled_from(["success", "failure", "cancelled"]))
    def call(self, outcome: str) -> None:
        allowed = self.allowed()
        try:
            self.breaker.before_call()
        except CircuitOpen:
            assert not allowed
            return
        assert allowed
        state = self.model_state()
        if state == "half-open":
            self.trial_at = self.clock.now
        if outcome == "success":
            self.breaker.record_success()
            self.model, self.failures, self.trial_at = "closed", 0, None
        elif outcome == "failure":
            self.breaker.record_failure()
            self.failures += 1
            if state == "half-open" or self.failures >= self.threshold:
                self.model, self.opened_at, self.trial_at = "open", self.clock.now, None
        else:
            self.breaker.release()
            self.trial_at = None

    @precondition(lambda self: self.model_state() == "closed")
    @rule()
    def late_failure_below_threshold_keeps_closed(self) -> None:
        if self.failures + 1 < self.threshold:
            self.breaker.record_failure()
            self.failures += 1

    @invariant()
    def state_matches_model(self) -> None:
        assert self.breaker.state == self.model_state()


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = relaxed(max_examples=80, stateful_step_count=30)


def test_breaker_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", threshold=0)
    kwargs: dict[str, Any] = {"cooldown": -1}
    with pytest.raises(ValueError):
        CircuitBreaker("x", **kwargs)
