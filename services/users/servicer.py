"""``mediagrid.users.v1.UserService``: request validation, authorization, then the domain work."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any

import grpc
from mediagrid.users.v1 import user_service_pb2 as pb
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

from common import pagination, timestamps
from common.auth import CachingAuthenticator
from common.context import Principal, current_principal
from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Violations,
)
from common.settings import Settings
from services.users import access, api_keys, convert, grants, permissions, throttle, validation
from services.users.accounts import Accounts
from services.users.activity import DatabaseActivityRecorder
from services.users.passwords import Passwords
from services.users.purge import UserDataPurger, attempt_purge
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from services.users.usage import UsageSource

UPDATABLE_FIELDS = ("display_name", "email", "role", "status")


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return ""


class UserServicer(pb_grpc.UserServiceServicer):
    def __init__(
        self,
        *,
        repository: UserRepository,
        sessions: SessionManager,
        passwords: Passwords,
        activity: DatabaseActivityRecorder,
        usage: UsageSource,
        purger: UserDataPurger,
        settings: Settings,
        cache: CachingAuthenticator | None = None,
        keys: api_keys.ApiKeyManager | None = None,
    ) -> None:
        # Revocations done here drop the cached principals of this process at once; other
        # processes see them within their cache TTL.
        self.cache = cache
        self.repository = repository
        self.sessions = sessions
        self.passwords = passwords
        self.activity = activity
        self.usage = usage
        self.purger = purger
        self.settings = settings
        self.keys = keys or api_keys.ApiKeyManager(
            api_keys.ApiKeyStore(repository.pool), repository
        )
        self.credentials = api_keys.CredentialResolver(sessions, self.keys)
        self.accounts = Accounts(repository, passwords, settings)

    # --- users ------------------------------------------------------------------------

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Any
    ) -> pb.CreateUserResponse:
        principal = current_principal()
        access.require(principal, "users.create", "users")
        # The admin role itself, never a grant: a new user may be an admin or a service.
        access.require_admin(principal, "create users")
        found = Violations()
        role = found.check(lambda: convert.role(request.user.role, "user.role", required=False))
        user = await self.accounts.create_user(
            email=request.user.email,
            display_name=request.user.display_name,
            role=role or "user",
            password=request.password,
            violations=found,
        )
        await self.activity.record("users.create", user.name, {"role": user.role})
        return pb.CreateUserResponse(user=convert.user_to_proto(user))

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.name))
        access.require(principal, "users.read", f"users/{user_id}")
        user = await self.repository.get_user(user_id)
        return pb.GetUserResponse(user=convert.user_to_proto(user))

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Any
    ) -> pb.UpdateUserResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.user.name, "user.name"))
        name = f"users/{user_id}"
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument.field("update_mask", "name at least one field to update")
        unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
        if unknown:
            raise InvalidArgument.field(
                "update_mask",
                f"cannot update {', '.join(unknown)}; updatable: {', '.join(UPDATABLE_FIELDS)}",
            )
        changes: dict[str, Any] = {}
        found = Violations()
        for path in paths:
            changes[path] = found.check(functools.partial(self._update_value, request.user, path))
        found.raise_if_any()
        access.require(principal, "users.update", name)
        if "role" in changes or "status" in changes:
            access.require_admin(principal, "change roles or statuses")
        current = await self.repository.get_user(user_id)
        if current.status == "deleted":
            raise FailedPrecondition("a deleted user cannot be changed", reason="USER_DELETED")
        demotes_admin = current.role == "admin" and (
            changes.get("role", "admin") != "admin" or changes.get("status", "active") != "active"
        )
        if demotes_admin:
            await self._keep_an_admin(user_id)
        revoke = ("role" in changes and changes["role"] != current.role) or (
            changes.get("status") == "disabled"
        )
        user = await self.repository.update_user(user_id, revoke_sessions=revoke, **changes)
        self._forget_user(name)
        await self.activity.record(
            "users.update",
            name,
            {"fields": ",".join(sorted(changes)), "sessions_revoked": str(revoke).lower()},
        )
        return pb.UpdateUserResponse(user=convert.user_to_proto(user))

    def _update_value(self, user: pb.User, path: str) -> Any:
        if path == "display_name":
            return validation.display_name(user.display_name, "user.display_name")
        if path == "email":
            return validation.email(user.email, "user.email")
        if path == "role":
            return convert.role(user.role, "user.role", required=True)
        status = convert.status(user.status, "user.status")
        if status not in ("active", "disabled"):
            raise InvalidArgument.field(
                "user.status", "must be active or disabled (use DeleteUser to delete)"
            )
        return status

    async def _keep_an_admin(self, user_id: str) -> None:
        if await self.repository.count_other_active_admins(user_id) == 0:
            raise FailedPrecondition("the last active admin cannot be removed", reason="LAST_ADMIN")

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Any
    ) -> pb.DeleteUserResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.name))
        name = f"users/{user_id}"
        access.require(principal, "users.delete", name)
        current = await self.repository.get_user(user_id)
        if current.status == "deleted":
            return pb.DeleteUserResponse(user=convert.user_to_proto(current))
        if current.role == "admin":
            await self._keep_an_admin(user_id)
        user = await self.repository.delete_user(user_id)
        self._forget_user(name)
        await self.activity.record("users.delete", name)
        await self._purge_now(name)
        return pb.DeleteUserResponse(user=convert.user_to_proto(user))

    async def _purge_now(self, name: str) -> None:
        """First purge attempt right away; on failure the sweep retries (the row is pending)."""
        await attempt_purge(
            self.purger,
            self.repository,
            name.removeprefix("users/"),
            attempt=1,
            retry_in_seconds=self.settings.users_purge_retry_seconds,
        )

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        principal = current_principal()
        found = Violations()
        size = found.check(lambda: validation.page_size(request.page_size), 0)
        role = found.check(lambda: convert.role(request.role, "role", required=False))
        status = found.check(lambda: convert.status(request.status, "status"))
        found.raise_if_any()
        access.require(principal, "users.list", "users")
        users, next_token = await pagination.page(
            "ListUsers",
            {"role": role, "status": status},
            request.page_token,
            size,
            lambda after, limit: self.repository.list_users(
                role=role, status=status, after=after, limit=limit
            ),
            lambda user: (user.create_time, user.id),
            pagination.BY_TIME,
        )
        return pb.ListUsersResponse(
            users=[convert.user_to_proto(u) for u in users], next_page_token=next_token
        )

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Any
    ) -> pb.ChangePasswordResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.name))
        name = f"users/{user_id}"
        if not request.new_password:
            raise InvalidArgument.field("new_password", "is required")
        access.require(principal, "users.update", name)
        credentials = await self.repository.get_credentials(user_id)
        if credentials.user.status == "deleted":
            raise FailedPrecondition("a deleted user cannot be changed", reason="USER_DELETED")
        validation.password(
            request.new_password,
            min_length=self.settings.password_min_length,
            email_address=credentials.user.email,
            field="new_password",
        )
        acting_on_self = user_id == principal.user_id
        if acting_on_self or not principal.is_admin:
            if not request.current_password:
                raise InvalidArgument.field("current_password", "is required")
            if not await self.passwords.verify(credentials.password_hash, request.current_password):
                raise PermissionDenied("the current password is wrong", reason="WRONG_PASSWORD")
        new_hash = await self.passwords.hash(request.new_password)
        keep = (
            principal.session.rsplit("/", 1)[-1] if acting_on_self and principal.session else None
        )
        revoked = await self.repository.set_password(user_id, new_hash, keep_session=keep)
        self._forget_user(name)
        await self.activity.record(
            "users.change_password", name, {"revoked_sessions": str(revoked)}
        )
        return pb.ChangePasswordResponse(revoked_sessions=revoked)

    # --- sessions ---------------------------------------------------------------------

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginResponse:
        peer = context.peer() or ""
        header = self.settings.login_client_address_header.lower()
        forwarded = _metadata_value(context, header) if header else None
        token, session, user = await self.sessions.login(
            request.email,
            request.password,
            user_agent=_metadata_value(context, "user-agent"),
            peer=peer,
            address=throttle.client_address(peer, forwarded),
        )
        await self.activity.record("users.login", session.name, actor=user.name)
        return pb.LoginResponse(
            token=token,
            session=self._session_to_proto(session, current=session.name),
            user=convert.user_to_proto(user),
        )

    async def Logout(self, request: pb.LogoutRequest, context: Any) -> pb.LogoutResponse:
        principal = current_principal()
        if principal.session is None:
            raise Unauthenticated(
                "this call was not made with a session token", reason="NO_SESSION"
            )
        user_id, session_id = validation.session_name(principal.session, "authorization")
        session = await self.repository.revoke_session(user_id, session_id)
        self._forget_session(session.name)
        await self.activity.record("users.logout", session.name)
        return pb.LogoutResponse(session=self._session_to_proto(session))

    async def Authenticate(
        self, request: pb.AuthenticateRequest, context: Any
    ) -> pb.AuthenticateResponse:
        if not request.token:
            raise InvalidArgument.field("token", "is required")
        principal = await self.credentials.resolve_token(request.token)
        return pb.AuthenticateResponse(principal=convert.principal_to_proto(principal))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Any
    ) -> pb.ListSessionsResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.parent, "parent"))
        size = validation.page_size(request.page_size)
        access.require(principal, "sessions.read", f"users/{user_id}")
        sessions, next_token = await pagination.page(
            "ListSessions",
            {"user": user_id, "all": request.show_inactive},
            request.page_token,
            size,
            lambda before, limit: self.repository.list_sessions(
                user_id,
                active_only=not request.show_inactive,
                idle_seconds=self.settings.session_idle_timeout_seconds,
                before=before,
                limit=limit,
            ),
            lambda session: (session.create_time, session.id),
            pagination.BY_TIME,
        )
        return pb.ListSessionsResponse(
            sessions=[self._session_to_proto(s, current=principal.session) for s in sessions],
            next_page_token=next_token,
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Any
    ) -> pb.RevokeSessionResponse:
        principal = current_principal()
        user_id, session_id = validation.session_name(request.name)
        access.require(principal, "sessions.revoke", request.name)
        session = await self.repository.revoke_session(user_id, session_id)
        self._forget_session(session.name)
        await self.activity.record("users.revoke_session", session.name)
        return pb.RevokeSessionResponse(
            session=self._session_to_proto(session, current=principal.session)
        )

    def _forget_session(self, session: str) -> None:
        if self.cache is not None:
            self.cache.evict_session(session)

    def _forget_user(self, user: str) -> None:
        if self.cache is not None:
            self.cache.evict_user(user)

    def _session_to_proto(self, session: Any, current: str | None = None) -> pb.Session:
        return convert.session_to_proto(
            session,
            idle_timeout_seconds=self.settings.session_idle_timeout_seconds,
            now=datetime.now(UTC),
            current_session=current,
        )

    # --- permissions ------------------------------------------------------------------

    async def GrantPermission(
        self, request: pb.GrantPermissionRequest, context: Any
    ) -> pb.GrantPermissionResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(lambda: validation.user_id(request.parent, "parent"), "")
        _check_permission(found, request.permission, request.resource)
        found.raise_if_any()
        user_id = access.resolve_user(principal, user_id)
        name = f"users/{user_id}"
        access.require(principal, "permissions.grant", name)
        grants.require_may_grant(principal.role, request.permission, request.resource)
        target = await self.repository.get_user(user_id)
        if target.status == "deleted":
            raise FailedPrecondition("a deleted user cannot receive grants", reason="USER_DELETED")
        grant, created = await self.repository.grant(
            user_id=user_id,
            permission=request.permission,
            resource=request.resource,
            creator=principal.name,
        )
        if created:
            self._forget_user(name)
            await self.activity.record(
                "users.grant_permission",
                grant.name,
                {"permission": grant.permission, "resource": grant.resource},
            )
        return pb.GrantPermissionResponse(grant=convert.grant_to_proto(grant), created=created)

    async def RevokePermission(
        self, request: pb.RevokePermissionRequest, context: Any
    ) -> pb.RevokePermissionResponse:
        principal = current_principal()
        user_id, grant_id = validation.grant_name(request.name)
        access.require(principal, "permissions.grant", f"users/{user_id}")
        existing = await self.repository.get_grant(user_id, grant_id)
        grants.require_may_grant(
            principal.role, existing.permission, existing.resource, verb="revoke"
        )
        grant = await self.repository.revoke_grant(user_id, grant_id)
        self._forget_user(f"users/{user_id}")
        await self.activity.record(
            "users.revoke_permission",
            grant.name,
            {"permission": grant.permission, "resource": grant.resource},
        )
        return pb.RevokePermissionResponse(grant=convert.grant_to_proto(grant))

    async def ListPermissions(
        self, request: pb.ListPermissionsRequest, context: Any
    ) -> pb.ListPermissionsResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(
            lambda: validation.user_id(request.parent, "parent", allow_everyone=True), ""
        )
        size = found.check(lambda: validation.page_size(request.page_size), 0)
        if request.permission and not permissions.is_known_permission(request.permission):
            found.add("permission", "is not a known permission")
        if request.resource and not permissions.is_valid_pattern(request.resource):
            found.add("resource", "is not a valid resource pattern")
        found.raise_if_any()
        user_id = access.resolve_user(principal, user_id)
        access.require(principal, "permissions.read", f"users/{user_id}")
        everyone = user_id == validation.EVERYONE
        grants, next_token = await pagination.page(
            "ListPermissions",
            {"user": user_id, "permission": request.permission, "resource": request.resource},
            request.page_token,
            size,
            lambda after, limit: self.repository.list_grants(
                user_id=None if everyone else user_id,
                permission=request.permission or None,
                resource=request.resource or None,
                after=after,
                limit=limit,
            ),
            lambda grant: (grant.create_time, grant.id),
            pagination.BY_TIME,
        )
        role_permissions: list[str] = []
        if not everyone:
            target = await self.repository.get_user(user_id)
            role_permissions = sorted(permissions.role_permissions(target.role))
        return pb.ListPermissionsResponse(
            grants=[convert.grant_to_proto(g) for g in grants],
            next_page_token=next_token,
            role_permissions=role_permissions,
        )

    async def CheckPermission(
        self, request: pb.CheckPermissionRequest, context: Any
    ) -> pb.CheckPermissionResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(lambda: validation.user_id(request.principal, "principal"), "")
        if not permissions.is_known_permission(request.permission):
            found.add("permission", "is not a known permission")
        found.check(lambda: validation.resource(request.resource))
        if request.owner:
            found.check(lambda: validation.user_id(request.owner, "owner"))
        found.raise_if_any()
        user_id = access.resolve_user(principal, user_id)
        access.require(principal, "permissions.check", f"users/{user_id}")
        subject = await self._subject(principal, user_id)
        decision = permissions.decide(
            principal_name=subject.name,
            role=subject.role,
            permissions=subject.permissions,
            permission=request.permission,
            resource=request.resource,
            owner=request.owner or None,
        )
        return pb.CheckPermissionResponse(allowed=decision != "DENIED", reason=decision)

    async def _subject(self, caller: Principal, user_id: str) -> Principal:
        """The principal asked about, with its current role and grants."""
        if user_id == caller.user_id:
            return caller
        user = await self.repository.get_user(user_id)
        if user.status != "active":
            return Principal(name=user.name, user_id=user.id, role="user", permissions=frozenset())
        grants = await self.repository.list_grants(
            user_id=user_id, permission=None, resource=None, after=None, limit=10_000
        )
        held = permissions.effective_permissions(
            user.role, (f"{g.permission}:{g.resource}" for g in grants)
        )
        return Principal(name=user.name, user_id=user.id, role=user.role, permissions=held)

    # --- activity ---------------------------------------------------------------------

    async def RecordActivity(
        self, request: pb.RecordActivityRequest, context: Any
    ) -> pb.RecordActivityResponse:
        principal = current_principal()
        found = Violations()
        found.check(lambda: validation.action(request.action))
        found.check(lambda: validation.resource(request.resource))
        found.check(lambda: validation.metadata(dict(request.metadata)))
        found.check(lambda: validation.request_id(request.request_id))
        if request.actor:
            found.check(lambda: validation.user_id(request.actor, "actor"))
        found.raise_if_any()
        actor = request.actor or principal.name
        access.require(principal, "activity.write", actor)
        entry = await self.activity.write(
            request.action,
            request.resource,
            dict(request.metadata),
            actor=actor,
            request_id=request.request_id or None,
        )
        return pb.RecordActivityResponse(entry=convert.activity_to_proto(entry))

    async def ListActivity(
        self, request: pb.ListActivityRequest, context: Any
    ) -> pb.ListActivityResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(
            lambda: validation.user_id(request.parent, "parent", allow_everyone=True), ""
        )
        size = found.check(lambda: validation.page_size(request.page_size), 0)
        action_filter = found.check(lambda: validation.action_filter(request.action), "")
        start = timestamps.from_timestamp(request.start_time, request.HasField("start_time"))
        end = timestamps.from_timestamp(request.end_time, request.HasField("end_time"))
        if start and end and start >= end:
            found.add("end_time", "must be after start_time")
        found.raise_if_any()
        user_id = access.resolve_user(principal, user_id)
        everyone = user_id == validation.EVERYONE
        if everyone:
            access.require_admin(principal, "list everyone's activity")
        else:
            access.require(principal, "activity.read", f"users/{user_id}")
        prefix = action_filter[:-1] if action_filter.endswith(".*") else None
        entries, next_token = await pagination.page(
            "ListActivity",
            {"user": user_id, "action": action_filter, "start": start, "end": end},
            request.page_token,
            size,
            lambda before, limit: self.repository.list_activity(
                actor_id=None if everyone else user_id,
                action=None if prefix is not None or not action_filter else action_filter,
                action_prefix=prefix,
                start=start,
                end=end,
                before_id=before,
                limit=limit,
            ),
            lambda entry: entry.id,
            pagination.BY_ID,
        )
        return pb.ListActivityResponse(
            entries=[convert.activity_to_proto(e) for e in entries], next_page_token=next_token
        )

    # --- API keys -------------------------------------------------------------------

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Any
    ) -> pb.CreateApiKeyResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(lambda: validation.user_id(request.parent, "parent"), "")
        display_name = found.check(
            lambda: validation.display_name(request.api_key.display_name, "api_key.display_name"),
            "",
        )
        expire_time = found.check(
            lambda: api_keys.expiry(
                timestamps.from_timestamp(
                    request.api_key.expire_time, request.api_key.HasField("expire_time")
                ),
                "api_key.expire_time",
            )
        )
        found.raise_if_any()
        access.require_admin(principal, "manage API keys")
        key, record = await self.keys.create(
            user_id=access.resolve_user(principal, user_id),
            creator=principal.name,
            display_name=display_name,
            permissions=list(request.api_key.permissions),
            job_types=list(request.api_key.job_types),
            expire_time=expire_time,
        )
        expires = record.expire_time.isoformat() if record.expire_time else "never"
        await self.activity.record(
            "users.create_api_key",
            record.name,
            {
                "user": f"users/{record.user_id}",
                "permissions": ",".join(record.permissions) or "*",
                "job_types": (",".join(record.job_types) or "*")[:1000],
                "expire_time": expires,
            },
        )
        return pb.CreateApiKeyResponse(api_key=convert.api_key_to_proto(record), key=key)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Any
    ) -> pb.ListApiKeysResponse:
        principal = current_principal()
        found = Violations()
        user_id = found.check(
            lambda: validation.user_id(request.parent, "parent", allow_everyone=True), ""
        )
        size = found.check(lambda: validation.page_size(request.page_size), 0)
        found.raise_if_any()
        access.require_admin(principal, "manage API keys")
        user_id = access.resolve_user(principal, user_id)
        everyone = user_id == validation.EVERYONE
        keys, next_token = await pagination.page(
            "ListApiKeys",
            {"user": user_id, "all": request.show_inactive},
            request.page_token,
            size,
            lambda after, limit: self.keys.store.list(
                user_id=None if everyone else user_id,
                active_only=not request.show_inactive,
                after=after,
                limit=limit,
            ),
            lambda key: (key.create_time, key.id),
            pagination.BY_TIME,
        )
        return pb.ListApiKeysResponse(
            api_keys=[convert.api_key_to_proto(k) for k in keys], next_page_token=next_token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Any
    ) -> pb.RevokeApiKeyResponse:
        principal = current_principal()
        user_id, key_id = api_keys.key_name(request.name)
        access.require_admin(principal, "manage API keys")
        record = await self.keys.store.revoke(user_id, key_id)
        if self.cache is not None:
            self.cache.evict(lambda p: p.api_key == record.name)
        await self.activity.record(
            "users.revoke_api_key", record.name, {"user": f"users/{record.user_id}"}
        )
        return pb.RevokeApiKeyResponse(api_key=convert.api_key_to_proto(record))

    # --- per-user data ----------------------------------------------------------------

    async def GetUserStats(
        self, request: pb.GetUserStatsRequest, context: Any
    ) -> pb.GetUserStatsResponse:
        principal = current_principal()
        user_id = access.resolve_user(principal, validation.user_id(request.name))
        name = f"users/{user_id}"
        access.require(principal, "users.read", name)
        await self.repository.get_user(user_id)
        jobs, files = await asyncio.gather(self.usage.job_counts(name), self.usage.file_usage(name))
        return pb.GetUserStatsResponse(
            user=name, job_counts=jobs, file_count=files.file_count, file_bytes=files.total_bytes
        )


def _check_permission(found: Violations, permission: str, resource: str) -> None:
    if not permission:
        found.add("permission", "is required")
    elif not permissions.is_known_permission(permission):
        found.add("permission", "is not a known permission")
    if not resource:
        found.add("resource", "is required")
    elif not permissions.is_valid_pattern(resource):
        found.add("resource", "must be '*', a prefix ending in '/*' or an exact resource name")
