"""Which role may grant which permission on which resources (the grant table, as data).

A grant adds ``permission:pattern`` to a principal's permissions. Grants exist to let a user
reach one more object of the files and jobs services; they must never reach what the admin
role is for, nor another user's account, sessions, grants or activity. So:

- every permission of the users service itself (``users.*``, ``sessions.*``,
  ``permissions.*``, ``activity.*``) is not grantable by anyone: its "other user" cells in the
  authorization matrix belong to the admin role, and the admin role is the way to get them;
- ``jobs.create`` and ``jobs.work`` are not grantable: who may create which job type and who
  may work is decided by roles and by the services' bootstrap (``jobs.create:job-types/T``,
  the literal entry that makes a service the owner of an internal job type); no grant made
  through ``GrantPermission`` may name a ``job-types/...`` resource;
- the remaining permissions act on one collection (``files/``, ``jobs/`` or ``batches/``) and
  their pattern must lie inside it: never ``*`` and never a ``users/...`` pattern;
- admins may grant them on a single resource (``files/abc``), its sub-resources
  (``files/abc/*``) or the whole collection (``files/*``); a service may grant only the
  permissions its own role holds, and only on a single resource; users grant nothing.

Revoking a grant needs the same right as making it. The table is also a filter: a stored
grant it does not allow is dropped from the principal (``honoured``), so a row written before
the table existed, or by hand, gives nothing (migration 002 deleted the old ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.auth import JOB_TYPE_PERMISSION, JOB_TYPES_COLLECTION
from common.context import Role
from common.errors import PermissionDenied

Scope = Literal["resource", "subtree", "collection"]


@dataclass(frozen=True)
class GrantRule:
    """Who may grant a permission, and on which collections."""

    collections: tuple[str, ...]
    # The widest pattern each role may use; a role that is absent may not grant it.
    widest: dict[Role, Scope]


_ADMIN_AND_SERVICE: dict[Role, Scope] = {"admin": "collection", "service": "resource"}
_ADMIN_ONLY: dict[Role, Scope] = {"admin": "collection"}

# The grantable permissions; every other permission of the vocabulary is not grantable.
GRANT_TABLE: dict[str, GrantRule] = {
    "files.read": GrantRule(("files",), _ADMIN_AND_SERVICE),
    "files.write": GrantRule(("files",), _ADMIN_AND_SERVICE),
    "files.delete": GrantRule(("files",), _ADMIN_ONLY),
    "files.share": GrantRule(("files",), _ADMIN_ONLY),
    "jobs.read": GrantRule(("jobs", "batches"), _ADMIN_AND_SERVICE),
    "jobs.cancel": GrantRule(("jobs", "batches"), _ADMIN_ONLY),
}

# Granted by the services' bootstrap only (never through GrantPermission): the entry that makes
# a service the owner of an internal job type (docs/jobs.md).

_WIDTH: dict[Scope, int] = {"resource": 0, "subtree": 1, "collection": 2}


def scope_of(pattern: str, collections: tuple[str, ...]) -> Scope | None:
    """How wide ``pattern`` is inside one of ``collections``; None when it is not inside one.

    ``files/*`` is the collection, ``files/abc`` one resource, ``files/abc/*`` one resource and
    what lies under it (versions); ``files/abc/versions/1`` counts as one resource too.
    """
    collection, sep, rest = pattern.partition("/")
    if not sep or collection not in collections or not rest:
        return None
    if rest == "*":
        return "collection"
    if rest.endswith("/*"):
        return "subtree"
    return "resource"


def may_grant(role: Role, permission: str, pattern: str) -> bool:
    """Whether a principal of ``role`` may grant (or revoke) ``permission`` on ``pattern``."""
    rule = GRANT_TABLE.get(permission)
    if rule is None:
        return False
    widest = rule.widest.get(role)
    scope = scope_of(pattern, rule.collections)
    if widest is None or scope is None:
        return False
    return _WIDTH[scope] <= _WIDTH[widest]


def is_job_type_grant(permission: str, pattern: str) -> bool:
    """``jobs.create:job-types/T``, the literal entry of an internal job type's owner."""
    collection, sep, name = pattern.partition("/")
    return (
        permission == JOB_TYPE_PERMISSION
        and collection == JOB_TYPES_COLLECTION
        and bool(sep and name)
        and "*" not in name
    )


def honoured(role: Role, permission: str, pattern: str) -> bool:
    """Whether a stored grant counts for a principal of ``role``.

    A grant counts when an admin could have made it, or when it is a job-type entry held by a
    service (made by the bootstrap). Anything else gives nothing, whoever wrote the row.
    """
    if is_job_type_grant(permission, pattern):
        return role == "service"
    return may_grant("admin", permission, pattern)


def require_may_grant(role: Role, permission: str, pattern: str, *, verb: str = "grant") -> None:
    """PERMISSION_DENIED ``GRANT_NOT_ALLOWED`` unless the table lets ``role`` do it."""
    if not may_grant(role, permission, pattern):
        raise PermissionDenied(
            f"a {role} principal may not {verb} {permission} on {pattern} (see the grant "
            "table in docs/users.md)",
            reason="GRANT_NOT_ALLOWED",
            metadata={"permission": permission, "resource": pattern, "role": role},
        )
