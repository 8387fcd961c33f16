"""Property: no sequence of grants, revokes and calls by non-admins reaches an admin capability.

Against the real users service in-process (auth cache off, so a grant would count at once):
a service and two regular users grant and revoke anything on anything to anyone, and try the
users RPCs that the authorization matrix gives only to admins (or to the owner). Every such
attempt must be refused, and at the end nobody was created, promoted, disabled or deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest_asyncio
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from mediagrid.users.v1 import user_service_pb2 as pb

from services.users import grants, permissions
from tests.support.auth import bearer
from tests.support.hypo import relaxed
from tests.users.conftest import PASSWORD, UsersEnv, start_users

CALLERS = ("service", "user1", "user2")
TARGETS = ("service", "user1", "user2", "victim")
PATTERNS = (
    "*",
    "users",
    "users/*",
    "users/{victim}",
    "users/{victim}/*",
    "users/{self}",
    "files/*",
    "files/abc",
    "jobs/*",
    "job-types/users.purge",
    "job-types/*",
)
# Attempts that the matrix refuses to every caller here (services and other users).
ATTEMPTS = (
    "create_user",
    "create_admin",
    "create_service",
    "list_users",
    "delete_victim",
    "disable_victim",
    "promote_self",
    "promote_victim",
    "rename_victim",
    "change_victim_password",
    "list_victim_sessions",
    "revoke_victim_session",
    "list_victim_activity",
    "list_all_activity",
)

grant_ops = st.tuples(
    st.just("grant"),
    st.sampled_from(CALLERS),
    st.sampled_from(TARGETS),
    st.sampled_from(sorted(permissions.VOCABULARY)),
    st.sampled_from(PATTERNS),
)
revoke_ops = st.tuples(st.just("revoke"), st.sampled_from(CALLERS), st.integers(0, 50))
attempt_ops = st.tuples(st.just("attempt"), st.sampled_from(CALLERS), st.sampled_from(ATTEMPTS))
OPS = st.lists(st.one_of(grant_ops, grant_ops, revoke_ops, attempt_ops), min_size=1, max_size=25)


@pytest_asyncio.fixture
async def env(suite: Callable[..., Any], password_hash: str) -> AsyncIterator[UsersEnv]:
    yield await start_users(suite, password_hash, auth_cache_ttl_seconds=0)


class World:
    """One example's principals: a service, two users and the victim (with a session)."""

    def __init__(self, env: UsersEnv) -> None:
        self.env = env
        self.names: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.grants: list[tuple[str, str, str]] = []  # (name, permission, resource)
        self.revoked: set[str] = set()
        self.victim_session = ""
        self.created = 0

    async def setup(self) -> None:
        for key, role in (
            ("service", "service"),
            ("user1", "user"),
            ("user2", "user"),
            ("victim", "user"),
        ):
            user, token = await self.env.user_with_token(role)
            self.names[key], self.ids[key], self.tokens[key] = user.name, user.id, token
            self.roles[key] = role
        sessions = await self.env.repository.list_sessions(
            self.ids["victim"], active_only=True, idle_seconds=3600, before=None, limit=1
        )
        self.victim_session = sessions[0].name

    def md(self, caller: str) -> Any:
        return bearer(self.tokens[caller])

    async def grant(self, caller: str, target: str, permission: str, pattern: str) -> None:
        resource = pattern.format(victim=self.names["victim"], self=self.names[caller])
        try:
            response = await self.env.stub.GrantPermission(
                pb.GrantPermissionRequest(
                    parent=self.names[target], permission=permission, resource=resource
                ),
                metadata=self.md(caller),
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc.details()
            # Refused exactly when the table refuses it (not, say, everything).
            assert not grants.may_grant(self.roles[caller], permission, resource)  # type: ignore[arg-type]
            return
        # Only what the table lets the caller's role grant is ever accepted.
        assert grants.may_grant(self.roles[caller], permission, resource)  # type: ignore[arg-type]
        self.grants.append((response.grant.name, permission, resource))

    async def revoke(self, caller: str, index: int) -> None:
        if not self.grants:
            return
        name, permission, resource = self.grants[index % len(self.grants)]
        allowed = grants.may_grant(self.roles[caller], permission, resource)  # type: ignore[arg-type]
        try:
            await self.env.stub.RevokePermission(
                pb.RevokePermissionRequest(name=name), metadata=self.md(caller)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # revoked by an earlier step
                assert name in self.revoked, exc.details()
            else:  # revoking needs the right granting would need
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED and not allowed
            return
        assert allowed
        self.revoked.add(name)

    async def attempt(self, caller: str, what: str) -> None:
        call = self._call(caller, what)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, (what, exc.details())
            return
        raise AssertionError(f"{caller} reached an admin capability: {what}")

    def _call(self, caller: str, what: str) -> Any:
        stub, md = self.env.stub, self.md(caller)
        victim = self.names["victim"]
        if what.startswith("create_"):
            self.created += 1
            role = {"create_user": pb.ROLE_USER, "create_admin": pb.ROLE_ADMIN}.get(
                what, pb.ROLE_SERVICE
            )
            email = f"new{self.created}-{self.ids[caller]}@example.com"
            return stub.CreateUser(
                pb.CreateUserRequest(user=pb.User(email=email, role=role), password=PASSWORD),
                metadata=md,
            )
        if what == "list_users":
            return stub.ListUsers(pb.ListUsersRequest(), metadata=md)
        if what == "delete_victim":
            return stub.DeleteUser(pb.DeleteUserRequest(name=victim), metadata=md)
        if what in ("disable_victim", "promote_self", "promote_victim", "rename_victim"):
            name = self.names[caller] if what == "promote_self" else victim
            user, path = {
                "disable_victim": (pb.User(name=name, status=pb.USER_STATUS_DISABLED), "status"),
                "promote_self": (pb.User(name=name, role=pb.ROLE_ADMIN), "role"),
                "promote_victim": (pb.User(name=name, role=pb.ROLE_ADMIN), "role"),
                "rename_victim": (pb.User(name=name, display_name="pwned"), "display_name"),
            }[what]
            return stub.UpdateUser(
                pb.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=[path])),
                metadata=md,
            )
        if what == "change_victim_password":
            return stub.ChangePassword(
                pb.ChangePasswordRequest(
                    name=victim, current_password=PASSWORD, new_password="a brand new passphrase"
                ),
                metadata=md,
            )
        if what == "list_victim_sessions":
            return stub.ListSessions(pb.ListSessionsRequest(parent=victim), metadata=md)
        if what == "revoke_victim_session":
            return stub.RevokeSession(
                pb.RevokeSessionRequest(name=self.victim_session), metadata=md
            )
        if what == "list_victim_activity":
            return stub.ListActivity(pb.ListActivityRequest(parent=victim), metadata=md)
        assert what == "list_all_activity"
        return stub.ListActivity(pb.ListActivityRequest(parent="users/-"), metadata=md)

    async def check_nothing_changed(self) -> None:
        repo = self.env.repository
        for key, role in self.roles.items():
            user = await repo.get_user(self.ids[key])
            assert (user.role, user.status) == (role, "active")
        assert (await repo.get_user(self.ids["victim"])).display_name != "pwned"
        for n in range(1, self.created + 1):
            for caller in CALLERS:
                email = f"new{n}-{self.ids[caller]}@example.com"
                assert await repo.find_credentials(email) is None
        stored = await self.env.ctx.pool.fetch(
            "SELECT g.permission, g.resource, u.role FROM users.grants g "
            "JOIN users.users u ON u.id = g.user_id WHERE g.user_id = ANY($1::text[])",
            list(self.ids.values()),
        )
        for row in stored:
            # Every grant here was made by a non-admin: the widest of them is the service.
            assert grants.may_grant("service", row["permission"], row["resource"]), dict(row)


@relaxed(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_no_sequence_of_grants_reaches_an_admin_capability(
    env: UsersEnv, ops: list[tuple[Any, ...]]
) -> None:
    world = World(env)
    await world.setup()
    for op in ops:
        if op[0] == "grant":
            await world.grant(*op[1:])
        elif op[0] == "revoke":
            await world.revoke(*op[1:])
        else:
            await world.attempt(*op[1:])
    # Each attempt once more at the end, with whatever grants are left in place.
    for caller in CALLERS:
        for what in ATTEMPTS:
            await world.attempt(caller, what)
    await world.check_nothing_changed()
