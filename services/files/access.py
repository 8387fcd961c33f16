"""Who may do what to a file: owner and admins fully, services read/write, grantees by role.

The principal is checked before existence: a caller without access to a file id gets
PERMISSION_DENIED whether or not the file exists, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Literal

from common.auth import scope_allows
from common.context import Principal
from common.errors import NotFound, PermissionDenied
from services.files.models import FileRecord, UploadSession
from services.files.repository import FileRepository

# read: record, bytes, versions, download URLs. write: read + metadata, new versions, restore.
# manage: write + delete, share, unshare, list grants (owner and admins only).
Need = Literal["read", "write", "manage"]


def is_privileged(principal: Principal) -> bool:
    """Admins and other services (workers, the users service) act on any user's collection
    (an API key of a service only with ``files.read`` in its scope)."""
    return principal.is_admin or (principal.is_service and scope_allows(principal, "files.read"))


def bypasses_shares(principal: Principal, need: Need) -> bool:
    """Admins may do anything to any file; services only what their role table gives them.

    A service holds files.read and files.write on every resource but neither files.delete nor
    files.share: a leaked worker token must not delete a user's files or share them away.
    """
    return principal.is_admin or (
        principal.is_service and need != "manage" and scope_allows(principal, f"files.{need}")
    )


def denied(name: str) -> PermissionDenied:
    return PermissionDenied(
        f"you may not access {name}", reason="FILE_ACCESS_DENIED", metadata={"resource": name}
    )


async def require_file(
    repo: FileRepository,
    principal: Principal,
    file_id: str,
    need: Need,
    *,
    allow_deleted: bool = False,
) -> FileRecord:
    """The file, if ``principal`` may ``need`` it; PERMISSION_DENIED before NOT_FOUND."""
    name = f"files/{file_id}"
    record = await repo.get_file(file_id)
    if not bypasses_shares(principal, need):
        if record is None:
            raise denied(name)
        if record.owner_id != principal.user_id:
            if need == "manage":
                raise denied(name)
            role = await repo.share_role(file_id, principal.user_id)
            if role is None or (need == "write" and role != "writer"):
                raise denied(name)
    if record is None:
        raise NotFound(
            f"{name} does not exist", reason="FILE_NOT_FOUND", metadata={"resource": name}
        )
    if record.deleted and not allow_deleted:
        raise NotFound(f"{name} was deleted", reason="FILE_DELETED", metadata={"resource": name})
    return record


def require_user(principal: Principal, user_id: str) -> None:
    """Acting on a user's collection (list, usage): that user, admins and services only."""
    if principal.user_id != user_id and not is_privileged(principal):
        raise PermissionDenied(
            "you may only act on your own files",
            reason="USER_ACCESS_DENIED",
            metadata={"resource": f"users/{user_id}"},
        )


async def require_upload(
    repo: FileRepository, principal: Principal, upload_id: str
) -> UploadSession:
    """The session, if ``principal`` started it (or is privileged); PERMISSION_DENIED first."""
    name = f"uploads/{upload_id}"
    session = await repo.get_upload(upload_id)
    if not is_privileged(principal) and (session is None or session.owner_id != principal.user_id):
        raise PermissionDenied(
            f"you may not access {name}", reason="UPLOAD_ACCESS_DENIED", metadata={"resource": name}
        )
    if session is None:
        raise NotFound(
            f"{name} does not exist", reason="UPLOAD_NOT_FOUND", metadata={"resource": name}
        )
    return session
