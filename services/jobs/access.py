"""Who may do what in the jobs service.

Owners act on their own jobs and batches, administrators on all. A caller that may not see a
resource gets PERMISSION_DENIED whether or not it exists (so names do not leak); only
administrators (and services, for the cross-service calls) can learn that a name is unknown.
"""

from __future__ import annotations

from common.context import Principal, current_principal
from common.errors import PermissionDenied


def caller() -> Principal:
    return current_principal()


def may_act_on(principal: Principal, owner: str) -> bool:
    return principal.is_admin or principal.name == owner


def denied(resource: str) -> PermissionDenied:
    return PermissionDenied(
        f"the caller may not access {resource} (or it does not exist)",
        reason="PERMISSION_DENIED",
        metadata={"resource": resource},
    )


def require_worker() -> Principal:
    """WorkerService callers: role service or admin."""
    principal = current_principal()
    if not (principal.is_service or principal.is_admin):
        raise PermissionDenied(
            "worker calls need a principal with role service", reason="NOT_A_WORKER"
        )
    return principal


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
