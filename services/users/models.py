"""Domain types of the users service: frozen pydantic models, free of protobuf and I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Self

from common.context import Role
from common.models import FrozenModel

Status = Literal["active", "disabled", "deleted"]


class User(FrozenModel):
    """An account as the outside world may see it (no password hash here, ever)."""

    id: str
    email: str
    display_name: str
    role: Role
    status: Status
    has_password: bool
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None = None
    last_login_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"users/{self.id}"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            id=row["id"],
            email=row["email"],
            display_name=row["display_name"],
            role=row["role"],
            status=row["status"],
            has_password=row["password_hash"] is not None,
            create_time=row["create_time"],
            update_time=row["update_time"],
            delete_time=row["delete_time"],
            last_login_time=row["last_login_time"],
        )


class Credentials(FrozenModel):
    """A user with the password hash, for login only; never converted to a response."""

    user: User
    password_hash: str | None


class Session(FrozenModel):
    id: str
    user_id: str
    create_time: datetime
    last_use_time: datetime
    expire_time: datetime
    revoke_time: datetime | None = None
    user_agent: str = ""
    peer: str = ""

    @property
    def name(self) -> str:
        return f"users/{self.user_id}/sessions/{self.id}"


class SessionAuth(FrozenModel):
    """What authenticating a token needs: the session, its user's role/status and grants."""

    session: Session
    role: Role
    status: Status
    grants: tuple[str, ...]  # "permission:pattern"


class Grant(FrozenModel):
    id: str
    user_id: str
    permission: str
    resource: str
    creator: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"users/{self.user_id}/grants/{self.id}"


class ApiKey(FrozenModel):
    """An API key of a service user (never its secret, nor the secret's hash)."""

    id: str
    user_id: str
    display_name: str
    permissions: tuple[str, ...]  # empty: every permission the user holds
    job_types: tuple[str, ...]  # empty: every job type
    creator: str
    create_time: datetime
    expire_time: datetime | None = None
    revoke_time: datetime | None = None
    active: bool

    @property
    def name(self) -> str:
        return f"users/{self.user_id}/apiKeys/{self.id}"


class ActivityEntry(FrozenModel):
    id: int
    actor: str
    action: str
    resource: str
    request_id: str
    metadata: dict[str, str]
    create_time: datetime

    @property
    def name(self) -> str:
        return f"activity/{self.id}"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            id=row["id"],
            actor=row["actor"],
            action=row["action"],
            resource=row["resource"],
            request_id=row["request_id"],
            metadata=dict(row["metadata"]),
            create_time=row["create_time"],
        )


class PendingPurge(FrozenModel):
    user_id: str
    request_time: datetime
    attempts: int
    next_attempt_time: datetime
    last_error: str
    done_time: datetime | None = None


class SweepReport(FrozenModel):
    sessions_deleted: int = 0
    activity_deleted: int = 0
    login_failures_deleted: int = 0
    purges_done: int = 0
    purges_failed: int = 0
    skipped: bool = False  # another replica held the sweep lock
