"""Who may do what in the jobs service.

Owners act on their own jobs and batches, administrators on all. A caller that may not see a
resource gets PERMISSION_DENIED whether or not it exists (so names do not leak); only
administrators (and services, for the cross-service calls) can learn that a name is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.auth import job_type_grant, scope_allows
from common.context import Principal, current_principal
from common.errors import PermissionDenied


def may_act_on(principal: Principal, owner: str) -> bool:
    return principal.is_admin or principal.name == owner


def denied(resource: str) -> PermissionDenied:
    return PermissionDenied(
        f"the caller may not access {resource} (or it does not exist)",
        reason="PERMISSION_DENIED",
        metadata={"resource": resource},
    )


def internal_type_grant(job_type: str) -> str:
    """The permission entry that makes a principal the owning service of ``job_type``."""
    return ":".join(job_type_grant(job_type))


def owns_job_type(principal: Principal, job_type: str) -> bool:
    """Whether ``principal`` is the service owning ``job_type``.

    Only the literal grant counts: a ``jobs.create:*`` entry (every service and admin holds
    one) must not make its holder the owner of every internal type.
    """
    return principal.is_service and internal_type_grant(job_type) in principal.permissions


def job_owner(principal: Principal, requested: str, job_type: str) -> str:
    """Who a new job belongs to: the caller, or the user its owning service names."""
    if not requested or requested == principal.name:
        return principal.name
    if not owns_job_type(principal, job_type):
        raise PermissionDenied(
            f"only the service owning job type {job_type!r} may create jobs for another user",
            reason="OWNER_NOT_ALLOWED",
            metadata={"type": job_type},
        )
    return requested


def require_worker() -> Principal:
    """WorkerService callers: role service or admin (an API key only with ``jobs.work``)."""
    principal = current_principal()
    if not (principal.is_service or principal.is_admin) or not scope_allows(principal, "jobs.work"):
        raise PermissionDenied(
            "worker calls need a principal with role service", reason="NOT_A_WORKER"
        )
    return principal


def require_claimable(principal: Principal, job_types: Sequence[str]) -> None:
    """An API key claims only the job types of its scope (sessions: every type)."""
    refused = [t for t in job_types if not scope_allows(principal, "jobs.work", f"job-types/{t}")]
    if refused:
        raise PermissionDenied(
            f"this API key may not claim jobs of type {refused[0]!r}",
            reason="JOB_TYPE_NOT_CLAIMABLE",
            metadata={"type": refused[0]},
        )


def require_admin() -> Principal:
    principal = current_principal()
    if not principal.is_admin:
        raise PermissionDenied("this call is for administrators", reason="ADMIN_ONLY")
    return principal


def require_owner_view(owner: str) -> Principal:
    """The owner themself, an administrator or a service (GetJobCounts)."""
    principal = current_principal()
    if not (principal.is_admin or principal.is_service or principal.name == owner):
        raise denied(owner)
    return principal


def require_admin_or_service() -> Principal:
    principal = current_principal()
    if not (principal.is_admin or principal.is_service):
        raise PermissionDenied(
            "this call is for administrators and services", reason="ADMIN_OR_SERVICE_ONLY"
        )
    return principal
