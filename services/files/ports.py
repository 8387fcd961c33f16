"""What the files service needs to know from its peers, as two protobuf-free ports.

- ``JobAccess``: may the caller attach an upload to a job (``UploadHeader.job``)?
- ``UserDirectory``: does a user exist and is it not deleted (a share's grantee)?

The gRPC adapters are in ``peers.py``; the ``Unavailable*`` ones here serve an engine used
without the jobs or users service (the legacy importer) and refuse every question.
"""

from __future__ import annotations

from typing import Protocol

from common.context import Principal
from common.errors import NotFound, PermissionDenied, Unavailable

JOBS_SERVICE = "mediagrid.jobs.v1.JobService"
USERS_SERVICE = "mediagrid.users.v1.UserService"


class JobAccess(Protocol):
    async def require_job(self, principal: Principal, job_id: str) -> None:
        """Return when ``principal`` may attach files to ``jobs/{job_id}``; raise otherwise."""


class UserDirectory(Protocol):
    async def require_user(self, user_id: str) -> None:
        """Return when ``users/{user_id}`` exists and is not deleted; NOT_FOUND otherwise."""


def job_not_accessible(name: str) -> PermissionDenied:
    return PermissionDenied(
        f"you may not attach files to {name}",
        reason="JOB_NOT_ACCESSIBLE",
        metadata={"resource": name},
    )


def grantee_not_found(name: str) -> NotFound:
    return NotFound(
        f"{name} does not exist", reason="GRANTEE_NOT_FOUND", metadata={"resource": name}
    )


class UnavailableJobAccess:
    async def require_job(self, principal: Principal, job_id: str) -> None:
        raise Unavailable.not_deployed(JOBS_SERVICE)


class UnavailableUserDirectory:
    async def require_user(self, user_id: str) -> None:
        raise Unavailable.not_deployed(USERS_SERVICE)
