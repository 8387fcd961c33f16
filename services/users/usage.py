"""Per-user usage gathered from other services (``GetUserStats``), behind a small port.

The integrator plugs in adapters calling ``mediagrid.jobs.v1.JobService/GetJobCounts`` and
``mediagrid.files.v1.FileService/GetUserUsage``; until those services exist the default
source reports UNAVAILABLE with ErrorInfo reason ``DEPENDENCY_UNAVAILABLE`` naming them.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict

from common.errors import Unavailable

JOBS_SERVICE = "mediagrid.jobs.v1.JobService"
FILES_SERVICE = "mediagrid.files.v1.FileService"


class FileUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    file_count: int
    total_bytes: int


class UsageSource(Protocol):
    """Where a user's job counts and file usage come from; ``user`` is ``users/{id}``."""

    async def job_counts(self, user: str) -> dict[str, int]:
        """The user's job count per job state enum name (``JOB_STATE_SUCCEEDED``, ...)."""

    async def file_usage(self, user: str) -> FileUsage:
        """Number and total bytes of the user's (not deleted) files."""


class MissingServicesUsageSource:
    """The source used while the jobs and files services are not part of the suite."""

    async def job_counts(self, user: str) -> dict[str, int]:
        raise Unavailable.not_deployed(JOBS_SERVICE)

    async def file_usage(self, user: str) -> FileUsage:
        raise Unavailable.not_deployed(FILES_SERVICE)
