"""The job state machine as a pure function: every legal transition, nothing else.

The repository's SQL implements the same transitions atomically in PostgreSQL (each UPDATE's
WHERE clause is the guard below); tests run random operation sequences against both and
check that they agree and that no sequence produces an illegal state or a second outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from common.errors import FailedPrecondition


class JobState(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


CLAIMABLE = frozenset({JobState.QUEUED, JobState.SCHEDULED})
FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})
RETRYABLE_FROM = frozenset({JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


@dataclass(frozen=True)
class Snapshot:
    """What the state machine needs to know about a job."""

    state: JobState
    attempts: int
    max_attempts: int
    lease: str | None = None
    # Outcomes (succeeded/failed/dead/cancelled) recorded since the job was last (re)queued.
    outcomes: int = 0


# Events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    lease: str


@dataclass(frozen=True)
class Complete:
    lease: str


@dataclass(frozen=True)
class Fail:
    lease: str
    retryable: bool


@dataclass(frozen=True)
class Release:
    lease: str


@dataclass(frozen=True)
class Expire:
    """The reaper found the lease expired."""


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Retry:
    pass


Event = Claim | Complete | Fail | Release | Expire | Cancel | Retry


def _require_lease(job: Snapshot, lease: str) -> None:
    if job.state is not JobState.RUNNING or job.lease != lease:
        raise FailedPrecondition(
            "the lease is no longer held: the job finished, was cancelled or was taken over",
            reason="LEASE_LOST",
            metadata={"state": job.state.value},
        )


def _finish(job: Snapshot, state: JobState) -> Snapshot:
    return replace(job, state=state, lease=None, outcomes=job.outcomes + 1)


def apply(job: Snapshot, event: Event) -> Snapshot:
    """The job after ``event``; raises FailedPrecondition when the event is illegal in its state."""
    match event:
        case Claim(lease=lease):
            if job.state not in CLAIMABLE:
                raise FailedPrecondition("only queued jobs can be claimed", reason="NOT_CLAIMABLE")
            return replace(job, state=JobState.RUNNING, attempts=job.attempts + 1, lease=lease)
        case Complete(lease=lease):
            _require_lease(job, lease)
            return _finish(job, JobState.SUCCEEDED)
        case Fail(lease=lease, retryable=retryable):
            _require_lease(job, lease)
            if not retryable:
                return _finish(job, JobState.FAILED)
            if job.attempts >= job.max_attempts:
                return _finish(job, JobState.DEAD)
            return replace(job, state=JobState.SCHEDULED, lease=None)
        case Release(lease=lease):
            _require_lease(job, lease)
            return replace(job, state=JobState.QUEUED, attempts=job.attempts - 1, lease=None)
        case Expire():
            if job.state is not JobState.RUNNING:
                raise FailedPrecondition("only running jobs have a lease", reason="NOT_RUNNING")
            if job.attempts >= job.max_attempts:
                return _finish(job, JobState.DEAD)
            return replace(job, state=JobState.QUEUED, lease=None)
        case Cancel():
            if job.state in FINAL:
                raise FailedPrecondition(
                    f"the job already finished ({job.state.value})",
                    reason="JOB_FINISHED",
                    metadata={"state": job.state.value},
                )
            return _finish(job, JobState.CANCELLED)
        case Retry():
            if job.state not in RETRYABLE_FROM:
                raise FailedPrecondition(
                    "only failed, dead or cancelled jobs can be retried",
                    reason="JOB_NOT_RETRYABLE",
                    metadata={"state": job.state.value},
                )
            return replace(job, state=JobState.QUEUED, attempts=0, lease=None, outcomes=0)
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def check_invariants(job: Snapshot) -> None:
    """Raise AssertionError when ``job`` is a state no legal sequence can reach."""
    assert (job.state is JobState.RUNNING) == (job.lease is not None), job
    assert 0 <= job.attempts <= job.max_attempts, job
    assert job.outcomes == (1 if job.state in FINAL else 0), job
    if job.state is JobState.RUNNING:
        assert job.attempts >= 1, job
