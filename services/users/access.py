"""Authorization decisions for the users service's own RPCs.

Names are checked against the caller before anything is read, so PERMISSION_DENIED comes
before NOT_FOUND and ids of other users reveal nothing.
"""

from __future__ import annotations

from common.auth import scope_allows
from common.context import Principal
from common.errors import PermissionDenied
from services.users import permissions, validation


def resolve_user(principal: Principal, user_id: str) -> str:
    """``me`` becomes the caller's own id."""
    return principal.user_id if user_id == validation.ME else user_id


def has_permission(
    principal: Principal, permission: str, resource: str, owner: str | None = None
) -> bool:
    decision = permissions.decide(
        principal_name=principal.name,
        role=principal.role,
        permissions=principal.permissions,
        permission=permission,
        resource=resource,
        owner=owner,
    )
    return decision != "DENIED" and scope_allows(principal, permission, resource)


def require(principal: Principal, permission: str, resource: str, owner: str | None = None) -> None:
    if not has_permission(principal, permission, resource, owner):
        raise PermissionDenied(
            f"{principal.name} may not use {permission} on {resource}",
            reason="PERMISSION_DENIED",
            metadata={"permission": permission, "resource": resource},
        )


def require_admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise PermissionDenied(f"only admins may {what}", reason="ADMIN_REQUIRED")
