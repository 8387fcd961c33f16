"""Domain types of the jobs service: frozen pydantic models, built from rows, no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self, TypeVar

from pydantic import BaseModel, Field

from common.models import FrozenModel
from services.jobs.states import FINAL, JobState

_M = TypeVar("_M", bound=BaseModel)


def trusted(cls: type[_M], data: dict[str, Any]) -> _M:
    """Build a model from values that are already checked (database rows, parsed ids).

    What ``model_construct`` does, without its per-field bookkeeping, for the hot paths
    (claims, outcome batches) that build a model per row (docs/benchmarks.md). ``data`` must hold
    every field, with values of the declared types.
    """
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", data)
    object.__setattr__(model, "__pydantic_fields_set__", set(data))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class JobSpec(FrozenModel):
    """A validated request to create one job."""

    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    schedule_time: datetime | None = None
    max_attempts: int
    request_id: str | None = None
    files: tuple[str, ...] = ()


class Job(FrozenModel):
    id: uuid.UUID
    type: str
    owner: str
    state: JobState
    priority: int
    payload: dict[str, Any]
    files: tuple[str, ...]
    batch_id: uuid.UUID | None
    request_id: str | None
    attempts: int
    max_attempts: int
    available_at: datetime
    lease_id: uuid.UUID | None
    lease_expires_at: datetime | None
    worker_id: str | None
    progress_percent: float
    progress_message: str
    result: dict[str, Any] | None
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    queue_position: int | None = None

    @property
    def name(self) -> str:
        return job_name(self.id)

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """Build from a ``jobs.jobs`` row: the database already enforces every type and
        constraint, so the model is constructed without re-validation (claims build
        thousands per second)."""
        data = {name: row[name] for name in _ROW_FIELDS}
        data["state"] = JobState(data["state"])
        data["files"] = tuple(data["files"] or ())
        data["queue_position"] = None
        return trusted(cls, data)


_ROW_FIELDS = tuple(name for name in Job.model_fields if name != "queue_position")


class Batch(FrozenModel):
    id: uuid.UUID
    owner: str
    display_name: str
    request_id: str | None
    total_jobs: int
    created_at: datetime
    state_counts: dict[JobState, int] = Field(default_factory=dict)
    progress_percent: float = 0.0

    @property
    def name(self) -> str:
        return batch_name(self.id)

    @property
    def done(self) -> bool:
        finished = sum(n for state, n in self.state_counts.items() if state in FINAL)
        return finished >= self.total_jobs


class Claimed(FrozenModel):
    """A job handed to a worker, with the wait it had in the queue."""

    job: Job
    wait_seconds: float
    # W3C headers of the request that created the job (services/jobs/tracing.py).
    trace_context: dict[str, str] | None = None


# A row of the claim_jobs statement: the columns of jobs.jobs a claimed job's message carries,
# plus wait_seconds (how long it waited claimable). Claims hand out thousands of jobs per
# second and a domain model would add nothing between the row and the message, so the
# servicer writes rows straight into messages (convert.fill_claimed_proto).
ClaimRow = Mapping[str, Any]


class Finished(FrozenModel):
    """One outcome recorded by CompleteJobs/FailJobs, for metrics."""

    id: uuid.UUID
    type: str
    state: JobState
    run_seconds: float


class LeaseRef(FrozenModel):
    job_id: uuid.UUID
    lease_id: uuid.UUID


class FailureReport(FrozenModel):
    lease: LeaseRef
    error: str
    retryable: bool
    retry_delay_seconds: float | None = None


class QueueDepth(FrozenModel):
    type: str
    priority: int
    ready: int
    scheduled: int


class ThroughputWindow(FrozenModel):
    seconds: int
    succeeded: int
    failed: int

    @property
    def jobs_per_second(self) -> float:
        return self.succeeded / self.seconds

    @property
    def failure_rate(self) -> float:
        total = self.succeeded + self.failed
        return self.failed / total if total else 0.0


class QueueStats(FrozenModel):
    depths: tuple[QueueDepth, ...]
    oldest_wait_seconds: float
    running: int
    windows: tuple[ThroughputWindow, ...]


class ListFilter(FrozenModel):
    owner: str | None = None
    states: tuple[JobState, ...] = ()
    types: tuple[str, ...] = ()
    batch_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class DeletedUserJobs(FrozenModel):
    cancelled: int
    deleted: int
    deleted_batches: int


def job_name(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}"


def batch_name(batch_id: uuid.UUID) -> str:
    return f"batches/{batch_id}"
