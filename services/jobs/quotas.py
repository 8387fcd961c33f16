"""The per-owner quota of waiting jobs: who it applies to and the error past it.

A user's queued and scheduled jobs together are capped at ``job_owner_max_queued``, whoever
created them: jobs a service creates for a user (``CreateJobRequest.owner``) count against
that user. A service's or an administrator's own jobs are exempt: services enqueue internal
work in bulk (and the benchmarks enqueue hundreds of thousands as a service), and neither
role is a tenant that could starve the others by accident. The count and the insert happen
under the owner's lock in the repository (migration 006), so the cap is never overshot.

The same jobs count against their owner's cap of running jobs (``job_owner_max_running``):
the repository marks every job it creates under a quota as capped (migration 007), and the
claim starts no more of an owner's capped jobs than leave it at the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.context import Principal
from common.errors import ResourceExhausted
from common.settings import Settings

REASON = "JOB_QUOTA_EXCEEDED"


@dataclass(frozen=True)
class Quota:
    """The cap on an owner's waiting jobs, and the retry delay its error suggests."""

    limit: int
    retry_after_seconds: float

    def exceeded(self, queued: int, adding: int) -> ResourceExhausted:
        """The error for a creation of ``adding`` jobs refused at ``queued`` waiting jobs."""
        return ResourceExhausted(
            f"the owner already has {queued} queued or scheduled jobs and at most {self.limit} "
            f"may wait (this call adds {adding}); retry once some have started, or cancel some",
            reason=REASON,
            metadata={"limit": self.limit, "queued": queued},
            retry_after_seconds=self.retry_after_seconds,
        )


def quota_for(principal: Principal, owner: str, settings: Settings) -> Quota | None:
    """The quota of jobs ``principal`` creates for ``owner``; None: not capped.

    Only the caller's own jobs can be exempt: jobs created for somebody else belong to a
    user (decision 1 of issue 10: only a service creates them, for the user it names).
    """
    if owner == principal.name and (principal.is_service or principal.is_admin):
        return None
    return Quota(settings.job_owner_max_queued, settings.job_owner_quota_retry_seconds)
