"""The job type of the users service: ``users.purge``, internal.

Only the users service (owning ``jobs.create:job-types/users.purge``) enqueues it, for a
deleted user; its worker removes every job and file of the user the payload names.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.jobs.job_types import INTERNAL, JobType

PURGE_JOB = "users.purge"


class PurgePayload(BaseModel):
    """``{"user": "users/{id}"}``: the deleted user whose data goes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: Annotated[str, Field(pattern=r"^users/[A-Za-z0-9_-]{1,64}$")]


JOB_TYPES = (JobType(PURGE_JOB, INTERNAL, max_run_seconds=3600, payload=PurgePayload),)
