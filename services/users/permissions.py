"""The permission vocabulary, role defaults, resource patterns and the one decision function.

A principal's effective permissions are strings of two kinds:

- ``files.read``: a role permission on the principal's *own* resources (for ``user``);
  admins and services hold theirs as ``files.read:*`` (every resource).
- ``files.read:files/abc``: a grant on the resources matching a pattern.

A pattern is ``*`` (everything), a prefix ending in ``/*`` (``files/*`` matches ``files/x``
and ``files/x/versions/y``) or an exact resource name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from common.auth import granted, owns
from common.context import Role
from services.users import grants as grant_rules

# Every permission the suite knows; grants of anything else are refused.
VOCABULARY: frozenset[str] = frozenset(
    {
        "users.create",
        "users.read",
        "users.list",
        "users.update",
        "users.delete",
        "sessions.read",
        "sessions.revoke",
        "permissions.read",
        "permissions.grant",
        "permissions.check",
        "activity.read",
        "activity.write",
        "jobs.create",
        "jobs.read",
        "jobs.cancel",
        "jobs.work",
        "files.read",
        "files.write",
        "files.delete",
        "files.share",
    }
)

# A user's permissions on their own resources.
USER_DEFAULTS: frozenset[str] = frozenset(
    {
        "users.read",
        "users.update",
        "users.delete",
        "sessions.read",
        "sessions.revoke",
        "permissions.read",
        "permissions.check",
        "activity.read",
        "activity.write",
        "jobs.create",
        "jobs.read",
        "jobs.cancel",
        "files.read",
        "files.write",
        "files.delete",
        "files.share",
    }
)

# A service principal's permissions on every resource (workers, other services).
SERVICE_DEFAULTS: frozenset[str] = frozenset(
    {
        "users.read",
        "permissions.read",
        "permissions.grant",
        "permissions.check",
        "activity.write",
        "jobs.create",
        "jobs.read",
        "jobs.work",
        "files.read",
        "files.write",
    }
)

_PERMISSION_RE = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")
_SEGMENT = r"[A-Za-z0-9._~-]+"
_PATTERN_RE = re.compile(rf"^(\*|[a-z][a-z0-9-]*(/{_SEGMENT})*(/\*)?)$")
MAX_PATTERN_LENGTH = 512

Decision = Literal["ADMIN", "OWNER", "ROLE", "GRANT", "DENIED"]


def role_permissions(role: Role) -> frozenset[str]:
    """The role part of a principal's effective permissions."""
    if role == "admin":
        return frozenset(f"{p}:*" for p in VOCABULARY)
    if role == "service":
        return frozenset(f"{p}:*" for p in SERVICE_DEFAULTS)
    return USER_DEFAULTS


def effective_permissions(role: Role, grants: Iterable[str]) -> frozenset[str]:
    """Role permissions plus the grants (``permission:pattern``) the grant table honours.

    A stored grant the table does not allow (``grants.honoured``) gives nothing, so no row can
    lift a principal to what the admin role is for.
    """
    held = frozenset(entry for entry in grants if grant_rules.honoured(role, *_split_entry(entry)))
    return role_permissions(role) | held


def _split_entry(entry: str) -> tuple[str, str]:
    permission, _, pattern = entry.partition(":")
    return permission, pattern


def is_valid_pattern(pattern: str) -> bool:
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        return False
    if pattern != "*" and "*" in pattern[:-1]:
        return False
    return bool(_PATTERN_RE.fullmatch(pattern))


def is_known_permission(permission: str) -> bool:
    return permission in VOCABULARY


def decide(
    *,
    principal_name: str,
    role: Role,
    permissions: Iterable[str],
    permission: str,
    resource: str,
    owner: str | None = None,
) -> Decision:
    """Whether a principal may use ``permission`` on ``resource``, and why."""
    if role == "admin":
        return "ADMIN"
    if role == "service" and permission in SERVICE_DEFAULTS:
        return "ROLE"
    held = frozenset(permissions)
    if permission in held and owns(principal_name, resource, owner):
        return "OWNER"
    if granted(held, permission, resource):
        return "GRANT"
    return "DENIED"
