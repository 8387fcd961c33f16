"""The one place where protobuf messages and domain models meet."""

from __future__ import annotations

from datetime import datetime, timedelta

from mediagrid.users.v1 import user_service_pb2 as pb

from common.context import Principal, Role
from common.errors import InvalidArgument
from common.timestamps import timestamp
from services.users.models import ActivityEntry, ApiKey, Grant, Session, Status, User

ROLE_TO_PROTO: dict[Role, pb.Role.ValueType] = {
    "admin": pb.ROLE_ADMIN,
    "user": pb.ROLE_USER,
    "service": pb.ROLE_SERVICE,
}
PROTO_TO_ROLE: dict[int, Role] = {
    pb.ROLE_ADMIN: "admin",
    pb.ROLE_USER: "user",
    pb.ROLE_SERVICE: "service",
}
STATUS_TO_PROTO: dict[Status, pb.UserStatus.ValueType] = {
    "active": pb.USER_STATUS_ACTIVE,
    "disabled": pb.USER_STATUS_DISABLED,
    "deleted": pb.USER_STATUS_DELETED,
}
PROTO_TO_STATUS: dict[int, Status] = {v: k for k, v in STATUS_TO_PROTO.items()}


def role(value: int, field: str, *, required: bool) -> Role | None:
    """A Role enum number from a request; unknown numbers are INVALID_ARGUMENT."""
    if value == pb.ROLE_UNSPECIFIED:
        if required:
            raise InvalidArgument.field(field, "is required")
        return None
    if value not in PROTO_TO_ROLE:
        raise InvalidArgument.field(field, f"unknown role {value}")
    return PROTO_TO_ROLE[value]


def status(value: int, field: str) -> Status | None:
    if value == pb.USER_STATUS_UNSPECIFIED:
        return None
    if value not in PROTO_TO_STATUS:
        raise InvalidArgument.field(field, f"unknown status {value}")
    return PROTO_TO_STATUS[value]


def user_to_proto(user: User) -> pb.User:
    return pb.User(
        name=user.name,
        email=user.email,
        display_name=user.display_name,
        role=ROLE_TO_PROTO[user.role],
        status=STATUS_TO_PROTO[user.status],
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
        delete_time=timestamp(user.delete_time),
        last_login_time=timestamp(user.last_login_time),
        has_password=user.has_password,
    )


def session_to_proto(
    session: Session,
    *,
    idle_timeout_seconds: float,
    now: datetime,
    current_session: str | None = None,
) -> pb.Session:
    idle_expire = session.last_use_time + timedelta(seconds=idle_timeout_seconds)
    active = session.revoke_time is None and session.expire_time > now and idle_expire > now
    return pb.Session(
        name=session.name,
        create_time=timestamp(session.create_time),
        last_use_time=timestamp(session.last_use_time),
        expire_time=timestamp(session.expire_time),
        idle_expire_time=timestamp(min(idle_expire, session.expire_time)),
        revoke_time=timestamp(session.revoke_time),
        user_agent=session.user_agent,
        peer=session.peer,
        current=session.name == current_session,
        active=active,
    )


def grant_to_proto(grant: Grant) -> pb.Grant:
    return pb.Grant(
        name=grant.name,
        permission=grant.permission,
        resource=grant.resource,
        creator=grant.creator,
        create_time=timestamp(grant.create_time),
    )


def api_key_to_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        name=key.name,
        display_name=key.display_name,
        permissions=list(key.permissions),
        job_types=list(key.job_types),
        creator=key.creator,
        create_time=timestamp(key.create_time),
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
        active=key.active,
    )


def activity_to_proto(entry: ActivityEntry) -> pb.ActivityEntry:
    return pb.ActivityEntry(
        name=entry.name,
        actor=entry.actor,
        action=entry.action,
        resource=entry.resource,
        request_id=entry.request_id,
        metadata=entry.metadata,
        create_time=timestamp(entry.create_time),
    )


def principal_to_proto(principal: Principal) -> pb.Principal:
    return pb.Principal(
        user=principal.name,
        role=ROLE_TO_PROTO[principal.role],
        permissions=sorted(principal.permissions),
        session=principal.session or "",
        api_key=principal.api_key or "",
    )
