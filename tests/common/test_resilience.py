"""Backoff bounds, retry_async, the circuit breaker as a state machine, and ``Dependency``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common import deadlines, errors
from common.dependencies import Dependencies
from common.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpen,
    Dependency,
    backoff_delay,
    dependency_failed,
    retry_async,
)
from common.settings import Settings
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


async def fail() -> None:
    raise ConnectionError("down")


async def succeed() -> str:
    return "ok"


async def not_found() -> None:
    raise errors.NotFound()


async def test_breaker_opens_on_the_failure_rate_not_on_a_streak() -> None:
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=4, failure_rate=0.5, open_seconds=5)
    breaker = CircuitBreaker("s3", policy, reason="S3_UNAVAILABLE", clock=clock)
    for _ in range(3):  # below min_calls: even 3 failures out of 3 keep it closed
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state == "closed"
    # A success never opens a circuit, even one that leaves the window at 3 failures of 4.
    assert await breaker.call(succeed) == "ok"
    assert breaker.state == "closed"
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert breaker.state == "open"
    assert breaker.counts() == (5, 4)


async def test_breaker_rate_below_threshold_stays_closed_and_old_failures_expire() -> None:
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=4, failure_rate=0.5, open_seconds=5)
    breaker = CircuitBreaker("db", policy, clock=clock)
    for _ in range(3):
        await breaker.call(succeed)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)  # 1 of 4
    assert breaker.state == "closed"
    clock.now += 11  # everything above left the window
    assert breaker.counts() == (0, 0)
    await breaker.call(succeed)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state == "closed"  # 2 of 3: too few calls yet
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert breaker.state == "open"  # 3 of 4


async def test_open_breaker_refuses_at_once_with_retry_info_then_probes() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    policy = BreakerPolicy(
        window_seconds=10, min_calls=2, failure_rate=1.0, open_seconds=5, half_open_probes=2
    )
    breaker = CircuitBreaker(
        "s3",
        policy,
        reason="S3_UNAVAILABLE",
        clock=clock,
        listeners=[lambda _b, old, new: changes.append((old, new))],
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    clock.now += 2
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(counted)
    assert calls == 0  # refused without calling
    refused = caught.value
    assert refused.reason == "S3_UNAVAILABLE"
    assert refused.metadata == {"dependency": "s3", "circuit": "open"}
    assert refused.retry_after_seconds == pytest.approx(3.0)
    clock.now += 3
    assert breaker.state == "half-open"
    first, second = breaker.before_call(), breaker.before_call()
    assert first and second and first != second
    with pytest.raises(CircuitOpen):  # both trial slots are taken
        breaker.before_call()
    breaker.record_success(first)
    assert breaker.state == "half-open"  # one success of the two needed
    breaker.record_success(second)
    assert breaker.state == "closed"
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


async def test_a_failed_trial_reopens_and_a_late_outcome_is_not_a_trial() -> None:
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=1, failure_rate=1.0, open_seconds=5)
    breaker = CircuitBreaker("db", policy, clock=clock)
    late = breaker.before_call()  # a call that started while closed...
    breaker.record_failure(breaker.before_call())
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.state == "half-open"
    breaker.record_success(late)  # ...and succeeds now: not a trial, the circuit stays
    assert breaker.state == "half-open"
    trial = breaker.before_call()
    breaker.record_failure(trial)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(5.0)


async def test_a_cancelled_trial_gives_its_slot_back_and_not_found_closes() -> None:
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=1, failure_rate=1.0, open_seconds=5)
    breaker = CircuitBreaker("s3", policy, clock=clock)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    clock.now += 5
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


def test_a_trial_that_never_reports_frees_its_slot_after_open_seconds() -> None:
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=1, failure_rate=1.0, open_seconds=5)
    breaker = CircuitBreaker("s3", policy, clock=clock)
    breaker.record_failure(breaker.before_call())
    clock.now += 5
    assert breaker.before_call()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 5
    assert breaker.before_call()


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a model. Time moves in whole seconds with one-second window
    slices, so the model can count outcomes exactly: a call at time t is in the window while
    t >= now - window."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.policy = BreakerPolicy(
            window_seconds=10,
            min_calls=3,
            failure_rate=0.5,
            open_seconds=4,
            half_open_probes=2,
            consecutive_timeouts=2,
        )
        self.breaker = CircuitBreaker("dep", self.policy, clock=self.clock)
        self.model = "closed"
        self.opened_at = 0.0
        self.outcomes: list[tuple[float, bool]] = []
        self.trials: dict[int, float] = {}
        self.successes = 0
        self.timeouts_in_a_row = 0
        self.calls: list[int] = []  # tickets of calls in flight

    def model_state(self) -> str:
        if self.model == "open" and self.clock.now - self.opened_at >= self.policy.open_seconds:
            self.model = "half-open"
        return self.model

    def open(self) -> None:
        self.model, self.opened_at = "open", self.clock.now
        self.trials.clear()
        self.successes = 0

    def tripped(self) -> bool:
        recent = [failed for at, failed in self.outcomes if at >= self.clock.now - 10]
        return len(recent) >= self.policy.min_calls and sum(recent) >= 0.5 * len(recent)

    @rule(seconds=st.integers(min_value=0, max_value=6))
    def wait(self, seconds: int) -> None:
        self.clock.now += seconds

    @rule()
    def start(self) -> None:
        state = self.model_state()
        if state == "half-open":
            now = self.clock.now
            self.trials = {
                t: at for t, at in self.trials.items() if now - at < self.policy.open_seconds
            }
        allowed = state == "closed" or (
            state == "half-open" and len(self.trials) < self.policy.half_open_probes
        )
        try:
            ticket = self.breaker.before_call()
        except CircuitOpen:
            assert not allowed
            return
        assert allowed
        if state == "half-open":
            assert ticket
            self.trials[ticket] = self.clock.now
        else:
            assert ticket == 0
        self.calls.append(ticket)

    @precondition(lambda self: self.calls)
    @rule(
        index=st.integers(min_value=0, max_value=50),
        outcome=st.sampled_from(["success", "failure", "timeout", "release"]),
    )
    def finish(self, index: int, outcome: str) -> None:
        ticket = self.calls.pop(index % len(self.calls))
        state = self.model_state()
        trial = bool(ticket) and self.trials.pop(ticket, None) is not None
        if outcome == "release":
            self.breaker.release(ticket)
        elif outcome == "success":
            self.breaker.record_success(ticket)
            self.timeouts_in_a_row = 0
            if trial:
                self.successes += 1
                if self.successes >= self.policy.half_open_probes:
                    self.model, self.outcomes, self.trials = "closed", [], {}
            elif state == "closed":
                self.outcomes.append((self.clock.now, False))
        else:
            timed_out = outcome == "timeout"
            self.breaker.record_failure(ticket, timed_out=timed_out)
            self.timeouts_in_a_row += timed_out
            if trial:
                self.open()
            elif state == "closed":
                self.outcomes.append((self.clock.now, True))
                if self.tripped() or self.timeouts_in_a_row >= self.policy.consecutive_timeouts:
                    self.open()

    @invariant()
    def state_matches_model(self) -> None:
        assert self.breaker.state == self.model_state()


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = relaxed(max_examples=100, stateful_step_count=40)


def test_breaker_policy_rejects_bad_configuration() -> None:
    bad: list[dict[str, Any]] = [
        {"window_seconds": 0},
        {"min_calls": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"open_seconds": -1},
        {"half_open_probes": 0},
        {"consecutive_timeouts": 0},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            BreakerPolicy(**kwargs)


def dependency(clock: Clock, *, timeout: float = 0.2, min_calls: int = 2) -> Dependency:
    policy = BreakerPolicy(window_seconds=60, min_calls=min_calls, failure_rate=0.5)
    breaker = CircuitBreaker("postgresql", policy, reason="DATABASE_UNAVAILABLE", clock=clock)
    return Dependency("postgresql", reason="DATABASE_UNAVAILABLE", timeout=timeout, breaker=breaker)


async def test_dependency_bounds_a_hanging_call_and_then_fails_fast() -> None:
    dep = dependency(Clock())

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(2):
        with pytest.raises(errors.Unavailable) as caught:
            await dep.call(hang, what="get job")
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert caught.value.retry_after_seconds == 1.0
        assert caught.value.metadata["operation"] == "get job"
        assert not isinstance(caught.value, CircuitOpen)
    assert not dep.available
    with pytest.raises(CircuitOpen) as refused:
        await dep.call(hang, what="get job")
    assert refused.value.reason == "DATABASE_UNAVAILABLE"
    assert refused.value.metadata["circuit"] == "open"


async def test_a_hung_dependency_opens_the_breaker_after_timeouts_in_a_row() -> None:
    """Calls that each wait out their whole bound are too slow to fill a window; three in a
    row open the breaker anyway, and an answer in between starts the count again."""
    clock = Clock()
    policy = BreakerPolicy(window_seconds=10, min_calls=5, failure_rate=0.5)
    breaker = CircuitBreaker("s3", policy, reason="S3_UNAVAILABLE", clock=clock)
    dep = Dependency("s3", reason="S3_UNAVAILABLE", timeout=0.05, breaker=breaker)

    async def hang() -> None:
        await asyncio.Event().wait()

    async def answer() -> str:
        return "ok"

    async def timed_out() -> None:
        clock.now += 30  # each waits out a long bound: the window never holds two
        with pytest.raises(errors.Unavailable) as caught:
            await dep.call(hang, what="get object")
        assert not isinstance(caught.value, CircuitOpen)

    await timed_out()
    await timed_out()
    assert await dep.call(answer, what="head bucket") == "ok"
    await timed_out()
    await timed_out()
    assert dep.available
    await timed_out()
    assert not dep.available
    with pytest.raises(CircuitOpen):
        await dep.call(answer, what="get object")


async def test_dependency_counts_answers_as_health_and_passes_results_through() -> None:
    dep = dependency(Clock(), min_calls=1)
    assert await dep.call(succeed, what="x") == "ok"
    with pytest.raises(errors.NotFound):
        await dep.call(not_found, what="x")
    assert dep.available and dep.breaker.counts() == (2, 0)


async def test_dependency_call_is_bounded_by_the_callers_deadline() -> None:
    dep = dependency(Clock(), timeout=30, min_calls=1)
    entered = 0

    async def hang() -> None:
        nonlocal entered
        entered += 1
        await asyncio.Event().wait()

    with deadlines.incoming(0.3), pytest.raises(errors.Unavailable) as caught:
        await dep.call(hang, what="slow")
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    # Limited by what the caller had left minus a margin, far below the dependency's cap.
    assert 0 < float(caught.value.metadata["timeout_seconds"]) < 0.3
    # Cut short by the caller, not by our own limit: no verdict on the dependency.
    assert dep.available and dep.breaker.counts() == (0, 0)
    with deadlines.incoming(0.001), pytest.raises(errors.Unavailable) as short:
        await dep.call(hang, what="slow")
    assert short.value.reason == "DEADLINE_TOO_SHORT" and entered == 1


@relaxed()
@given(
    remaining=st.one_of(st.none(), st.floats(min_value=-5, max_value=1000, allow_nan=False)),
    cap=st.floats(min_value=0.001, max_value=600, allow_nan=False),
)
def test_bound_never_exceeds_the_cap_or_the_callers_time(
    remaining: float | None, cap: float
) -> None:
    with deadlines.incoming(remaining):
        try:
            limit = deadlines.bound(cap)
        except errors.Unavailable as exc:
            assert remaining is not None and exc.reason == "DEADLINE_TOO_SHORT"
            assert remaining < 0.05  # nothing left once the margin is kept back
            return
    assert 0 < limit <= cap
    if remaining is None:
        assert limit == cap
    else:
        assert limit < remaining
    assert deadlines.remaining() is None  # the block restored the outer (no) deadline


async def test_dependencies_export_breaker_state_and_call_outcomes(settings: Settings) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    deps = Dependencies(
        settings.model_copy(update={"breaker_min_calls": 2, "breaker_failure_rate": 0.5}),
        meter=provider.get_meter("test"),
    )
    assert await deps.s3.call(succeed, what="head bucket") == "ok"
    with pytest.raises(ConnectionError):
        await deps.s3.call(fail, what="put object")
    with pytest.raises(CircuitOpen):
        await deps.s3.call(succeed, what="put object")
    assert deps.peer("users") is deps.peer("users")
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    states = {p.attributes["dependency"]: p.value for p in points["mediagrid.breaker.state"]}
    assert states == {"postgresql": 0, "s3": 2, "users": 0}
    outcomes = {
        p.attributes["outcome"]: p.count
        for p in points["mediagrid.dependency.duration"]
        if p.attributes["dependency"] == "s3"
    }
    assert outcomes == {"ok": 1, "error": 1, "refused": 1}
    transitions = [p.attributes for p in points["mediagrid.breaker.transitions"]]
    assert transitions == [{"dependency": "s3", "state": "open"}]
    provider.shutdown()
