"""The job state machine as property tests: the pure function and the repository agree.

Random operation sequences never produce an illegal state, never lose a job and never
record two outcomes for one run; every operation the model rejects, PostgreSQL rejects too.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common.errors import FailedPrecondition
from services.jobs import states
from services.jobs.metrics import JobMetrics
from services.jobs.models import FailureReport, JobSpec, LeaseRef
from services.jobs.repository import JobRepository
from services.jobs.retention import reap
from services.jobs.states import FINAL, JobState, Snapshot
from tests.support.hypo import relaxed

# --- the pure transition function --------------------------------------------------------

leases = st.sampled_from(["a", "b", "c"])
events = st.one_of(
    st.builds(states.Claim, leases),
    st.builds(states.Complete, leases),
    st.builds(states.Fail, leases, st.booleans()),
    st.builds(states.Release, leases),
    st.just(states.Expire()),
    st.just(states.Cancel()),
    st.just(states.Retry()),
)


class PureMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Snapshot] = []
        self.outcomes_ever = 0

    @rule(max_attempts=st.integers(1, 4))
    def create(self, max_attempts: int) -> None:
        self.jobs.append(Snapshot(JobState.QUEUED, 0, max_attempts))

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 50), event=events)
    def step(self, index: int, event: states.Event) -> None:
        index %= len(self.jobs)
        before = self.jobs[index]
        try:
            after = states.apply(before, event)
        except FailedPrecondition:
            return  # rejected: nothing changed
        if before.state in FINAL:
            assert isinstance(event, states.Retry), (before, event)
        if after.outcomes > before.outcomes:
            assert after.outcomes == 1, (before, event, after)
        self.jobs[index] = after

    @invariant()
    def legal(self) -> None:
        for job in self.jobs:
            states.check_invariants(job)


TestPureStateMachine = PureMachine.TestCase
TestPureStateMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_outcome_needs_the_current_lease() -> None:
    running = states.apply(Snapshot(JobState.QUEUED, 0, 3), states.Claim("l1"))
    with pytest.raises(FailedPrecondition) as err:
        states.apply(running, states.Complete("l0"))
    assert err.value.reason == "LEASE_LOST"
    done = states.apply(running, states.Complete("l1"))
    with pytest.raises(FailedPrecondition):
        states.apply(done, states.Fail("l1", retryable=True))


# --- the repository against the model ------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "create",
                "claim",
                "complete",
                "fail",
                "fail_final",
                "release",
                "expire",
                "cancel",
                "retry",
                "stale_complete",
            ]
        ),
        st.integers(0, 20),
    ),
    min_size=1,
    max_size=30,
)


@relaxed(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_repository_follows_the_model(pool: asyncpg.Pool, ops: list[tuple[str, int]]) -> None:
    repo = JobRepository(pool)
    job_type = f"prop.t{uuid.uuid4().hex[:8]}"
    owner = f"users/prop{uuid.uuid4().hex[:8]}"  # hypothesis examples share the database
    model: dict[uuid.UUID, Snapshot] = {}
    current: dict[uuid.UUID, uuid.UUID] = {}  # job -> lease it holds now
    stale: dict[uuid.UUID, uuid.UUID] = {}  # job -> a lease it held before
    order: list[uuid.UUID] = []

    def pick(index: int) -> uuid.UUID | None:
        return order[index % len(order)] if order else None

    async def expect(job_id: uuid.UUID, event: states.Event, action: object) -> None:
        try:
            after = states.apply(model[job_id], event)
        except FailedPrecondition:
            with pytest.raises(FailedPrecondition):
                await action  # type: ignore[misc]
            return
        await action  # type: ignore[misc]
        model[job_id] = after

    try:
        for op, index in ops:
            job_id = pick(index)
            if op == "create" or job_id is None:
                spec = JobSpec(type=job_type, max_attempts=1 + index % 3)
                job = await repo.create_job(owner, spec, None)
                model[job.id] = Snapshot(JobState.QUEUED, 0, spec.max_attempts)
                order.append(job.id)
            elif op == "claim":
                claimed = await repo.claim("w", [job_type], 1, lease_seconds=0.001)
                claimable = [j for j, s in model.items() if s.state in states.CLAIMABLE]
                assert bool(claimed) == bool(claimable)
                if claimed:
                    got = claimed[0].job
                    assert got.id in claimable
                    assert got.lease_id is not None
                    if got.id in current:
                        stale[got.id] = current[got.id]
                    current[got.id] = got.lease_id
                    model[got.id] = states.apply(model[got.id], states.Claim(str(got.lease_id)))
            elif op in ("complete", "stale_complete"):
                lease = (current if op == "complete" else stale).get(job_id, uuid.uuid4())
                await expect(
                    job_id,
                    states.Complete(str(lease)),
                    repo.complete([(LeaseRef(job_id=job_id, lease_id=lease), {})]),
                )
            elif op in ("fail", "fail_final"):
                lease = current.get(job_id, uuid.uuid4())
                report = FailureReport(
                    lease=LeaseRef(job_id=job_id, lease_id=lease),
                    error="x",
                    retryable=op == "fail",
                    retry_delay_seconds=0.000001,
                )
                await expect(
                    job_id, states.Fail(str(lease), op == "fail"), repo.fail([report], 1, 1)
                )
            elif op == "release":
                lease = current.get(job_id, uuid.uuid4())
                try:
                    after = states.apply(model[job_id], states.Release(str(lease)))
                except FailedPrecondition:
                    assert await repo.release([LeaseRef(job_id=job_id, lease_id=lease)]) == 0
                else:
                    assert await repo.release([LeaseRef(job_id=job_id, lease_id=lease)]) == 1
                    model[job_id] = after
            elif op == "expire":
                # Claims take a 1 ms lease; a claim a moment ago may not have expired yet.
                await asyncio.sleep(0.005)
                reaped = await reap(repo, JobMetrics())
                running = [j for j, s in model.items() if s.state is JobState.RUNNING]
                assert reaped == len(running)
                for j in running:
                    model[j] = states.apply(model[j], states.Expire())
            elif op == "cancel":
                await expect(job_id, states.Cancel(), repo.cancel_job(job_id))
            elif op == "retry":
                await expect(job_id, states.Retry(), repo.retry_job(job_id))
            # The database agrees with the model, and no job was lost.
            for j, snapshot in model.items():
                states.check_invariants(snapshot)
                row = await repo.get_job(j)
                assert (row.state, row.attempts) == (snapshot.state, snapshot.attempts), (
                    op,
                    snapshot,
                    row,
                )
                assert (row.lease_id is not None) == (snapshot.state is JobState.RUNNING)
                assert (row.finished_at is not None) == (snapshot.state in FINAL)
                if snapshot.state is JobState.RUNNING:
                    assert str(row.lease_id) == snapshot.lease
        counts = await repo.counts_by_owner(owner)
        assert sum(counts.values()) == len(model)
    finally:
        # Nothing of this example stays RUNNING for a later example's reaper to find.
        await repo.delete_owner_jobs(owner, 1000)
