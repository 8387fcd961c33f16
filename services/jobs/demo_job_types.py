"""The demo job types (handlers in ``builtin_handlers``): for tests, benchmarks, smoke checks.

Declared only while the setting ``demo_job_types`` is on (dev/test by default): ``sleep``
holds a worker slot for as long as it is told, which nobody should be able to ask of a
production worker.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.jobs.job_types import EVERYONE, JobType

NOOP_MAX_RUN_SECONDS = 60.0
SLEEP_MAX_RUN_SECONDS = 3600.0
FAIL_MAX_RUN_SECONDS = 60.0
STAMP_MAX_RUN_SECONDS = 60.0


class EmptyPayload(BaseModel):
    """``noop`` and ``stamp`` take nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SleepPayload(BaseModel):
    """``sleep``: sleep ``seconds`` (bounded by the type's longest run), in ``steps`` parts,
    reporting progress after each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seconds: Annotated[float, Field(ge=0, le=SLEEP_MAX_RUN_SECONDS)] = 0.1
    steps: Annotated[int, Field(ge=1, le=1000)] = 1


class FailPayload(BaseModel):
    """``fail``: fail ``permanent``ly or ``retryable``, succeeding from attempt
    ``succeed_on_attempt`` on when given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["permanent", "retryable"] = "retryable"
    succeed_on_attempt: Annotated[int, Field(ge=1, le=1000)] | None = None


JOB_TYPES = (
    JobType("noop", EVERYONE, NOOP_MAX_RUN_SECONDS, EmptyPayload),
    JobType("sleep", EVERYONE, SLEEP_MAX_RUN_SECONDS, SleepPayload),
    JobType("fail", EVERYONE, FAIL_MAX_RUN_SECONDS, FailPayload),
    JobType("stamp", EVERYONE, STAMP_MAX_RUN_SECONDS, EmptyPayload),
)
