"""The grant table: who may grant which permission on which resources, as data and over RPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.users.v1 import user_service_pb2 as pb

from common.auth import allows
from common.context import Principal
from common.grpc_errors import error_info
from services.users import grants, permissions
from tests.support.auth import bearer
from tests.support.hypo import relaxed
from tests.users.conftest import PASSWORD, UsersEnv

ROLES = ("admin", "service", "user")

# (role, permission, resource, may grant). Every permission of the vocabulary appears.
TABLE = [
    # Admin-only and user-only permissions: nobody, on any pattern.
    *[
        (role, perm, res, False)
        for role in ROLES
        for perm in ("users.create", "users.list", "users.delete", "sessions.read", "activity.read")
        for res in ("*", "users/*", "users", "users/abc", "files/abc")
    ],
    # The rest of the users service's own vocabulary: nobody either.
    *[
        (role, perm, res, False)
        for role in ROLES
        for perm in (
            "users.read",
            "users.update",
            "sessions.revoke",
            "permissions.read",
            "permissions.grant",
            "permissions.check",
            "activity.write",
        )
        for res in ("*", "users/*", "users/abc")
    ],
    # Job creation and work: roles and the bootstrap only; job-types/* never through the RPC.
    *[
        (role, perm, res, False)
        for role in ROLES
        for perm in ("jobs.create", "jobs.work")
        for res in ("*", "jobs/*", "job-types/users.purge", "job-types/*", "jobs/abc")
    ],
    *[
        (role, perm, "job-types/video.probe", False)
        for role in ROLES
        for perm in sorted(permissions.VOCABULARY)
    ],
    # Files and jobs: admins on a resource, its subtree or the collection.
    ("admin", "files.read", "files/abc", True),
    ("admin", "files.read", "files/abc/*", True),
    ("admin", "files.read", "files/*", True),
    ("admin", "files.write", "files/*", True),
    ("admin", "files.delete", "files/abc", True),
    ("admin", "files.share", "files/abc", True),
    ("admin", "jobs.read", "jobs/*", True),
    ("admin", "jobs.read", "batches/abc", True),
    ("admin", "jobs.cancel", "jobs/abc", True),
    # ... never outside the permission's collection.
    ("admin", "files.read", "*", False),
    ("admin", "files.read", "users/*", False),
    ("admin", "files.read", "users/abc/files", False),
    ("admin", "files.read", "jobs/abc", False),
    ("admin", "files.read", "files", False),
    ("admin", "jobs.read", "files/abc", False),
    # Services: only what their role holds, on one resource.
    ("service", "files.read", "files/abc", True),
    ("service", "files.write", "files/abc", True),
    ("service", "jobs.read", "jobs/abc", True),
    ("service", "files.read", "files/abc/*", False),
    ("service", "files.read", "files/*", False),
    ("service", "files.read", "*", False),
    ("service", "files.delete", "files/abc", False),
    ("service", "files.share", "files/abc", False),
    ("service", "jobs.cancel", "jobs/abc", False),
    # Users grant nothing.
    *[
        ("user", perm, res, False)
        for perm in sorted(grants.GRANT_TABLE)
        for res in ("files/abc", "jobs/abc", "files/*")
    ],
]


@pytest.mark.parametrize(("role", "permission", "resource", "expected"), TABLE)
def test_grant_table(role: str, permission: str, resource: str, expected: bool) -> None:
    assert grants.may_grant(role, permission, resource) is expected  # type: ignore[arg-type]


def test_the_table_covers_the_vocabulary_and_no_more() -> None:
    assert set(grants.GRANT_TABLE) <= permissions.VOCABULARY
    assert {p for _, p, _, _ in TABLE} == permissions.VOCABULARY


def test_services_grant_only_what_their_role_holds() -> None:
    """Nobody grants what they could not have been given: a service holds what it grants."""
    for permission, rule in grants.GRANT_TABLE.items():
        if "service" in rule.widest:
            assert permission in permissions.SERVICE_DEFAULTS
        assert "user" not in rule.widest


NOT_GRANTABLE = sorted(permissions.VOCABULARY - set(grants.GRANT_TABLE))
patterns = st.sampled_from(
    ["*", "users/*", "users", "files/*", "files/a", "jobs/*", "job-types/users.purge"]
) | st.from_regex(r"\A[a-z-]{1,9}(/[a-z0-9.]{1,5}){0,2}(/\*)?\Z")


@relaxed()
@given(
    role=st.sampled_from(ROLES),
    permission=st.sampled_from(NOT_GRANTABLE),
    pattern=patterns,
)
def test_not_grantable_permissions_are_never_granted_nor_honoured(
    role: str, permission: str, pattern: str
) -> None:
    assert not grants.may_grant(role, permission, pattern)  # type: ignore[arg-type]
    if not grants.is_job_type_grant(permission, pattern):
        held = permissions.effective_permissions(role, [f"{permission}:{pattern}"])  # type: ignore[arg-type]
        assert held == permissions.role_permissions(role)  # type: ignore[arg-type]


@relaxed()
@given(permission=st.sampled_from(sorted(permissions.VOCABULARY)), pattern=patterns)
def test_a_users_grant_never_reaches_another_user(permission: str, pattern: str) -> None:
    """Whatever row is stored, a regular user gets nothing on another user's resources."""
    held = permissions.effective_permissions("user", [f"{permission}:{pattern}"])
    who = Principal(name="users/me1", user_id="me1", role="user", permissions=held)
    for resource in ("users", "users/other", "users/other/sessions/s", "job-types/users.purge"):
        if permission.split(".")[0] in ("users", "sessions", "permissions", "activity"):
            assert not allows(who, permission, resource)
        if resource.startswith("job-types/"):
            assert not allows(who, permission, resource)


def test_job_type_entries_count_only_for_services() -> None:
    entry = "jobs.create:job-types/video.probe"
    assert entry in permissions.effective_permissions("service", [entry])
    assert entry not in permissions.effective_permissions("user", [entry])
    assert "jobs.create:job-types/*" not in permissions.effective_permissions(
        "service", ["jobs.create:job-types/*"]
    )


# --- over RPC ---------------------------------------------------------------------------


async def _grant(env: UsersEnv, token: str, parent: str, perm: str, resource: str) -> Any:
    return await env.stub.GrantPermission(
        pb.GrantPermissionRequest(parent=parent, permission=perm, resource=resource),
        metadata=bearer(token),
    )


async def test_a_service_cannot_grant_its_way_to_admin(users: UsersEnv) -> None:
    _, service_token = await users.user_with_token("service")
    b, b_token = await users.user_with_token("user")
    for perm, resource in (
        ("users.create", "*"),
        ("users.create", "users"),
        ("users.list", "users"),
        ("users.delete", "users/*"),
        ("sessions.read", "users/*"),
        ("activity.read", "*"),
        ("permissions.grant", "users/*"),
        ("jobs.create", "job-types/users.purge"),
        ("files.read", "files/*"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _grant(users, service_token, b.name, perm, resource)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, (perm, resource)
        assert error_info(caught.value).reason == "GRANT_NOT_ALLOWED"  # type: ignore[union-attr]
    listed = await users.stub.ListPermissions(
        pb.ListPermissionsRequest(parent=b.name), metadata=bearer(service_token)
    )
    assert list(listed.grants) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.CreateUser(
            pb.CreateUserRequest(
                user=pb.User(email="climber@example.com", role=pb.ROLE_ADMIN), password=PASSWORD
            ),
            metadata=bearer(b_token),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_allowed_grants_work_and_revoking_is_symmetric(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    _, service_token = await users.user_with_token("service")
    b, _ = await users.user_with_token("user")
    one = await _grant(users, service_token, b.name, "files.read", "files/abc")
    assert one.created and one.grant.permission == "files.read"
    wide = await _grant(users, admin_token, b.name, "files.read", "files/*")
    assert wide.created
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.RevokePermission(
            pb.RevokePermissionRequest(name=wide.grant.name), metadata=bearer(service_token)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(caught.value).reason == "GRANT_NOT_ALLOWED"  # type: ignore[union-attr]
    revoked = await users.stub.RevokePermission(
        pb.RevokePermissionRequest(name=one.grant.name), metadata=bearer(service_token)
    )
    assert revoked.grant.name == one.grant.name
    await users.stub.RevokePermission(
        pb.RevokePermissionRequest(name=wide.grant.name), metadata=bearer(admin_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # admins too: no admin-only grants
        await _grant(users, admin_token, b.name, "users.list", "users")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_stored_grant_outside_the_table_gives_nothing(users: UsersEnv) -> None:
    """A row written around the RPC (before the table, by hand) is ignored."""
    b, b_token = await users.user_with_token("user")
    victim, _ = await users.user_with_token("user")
    for perm, resource in (
        ("users.create", "*"),
        ("users.list", "*"),
        ("users.delete", "*"),
        ("users.update", "*"),
        ("sessions.read", "*"),
    ):
        await users.repository.grant(user_id=b.id, permission=perm, resource=resource, creator="x")
    calls = [
        users.stub.CreateUser(
            pb.CreateUserRequest(
                user=pb.User(email="made@example.com", role=pb.ROLE_ADMIN), password=PASSWORD
            ),
            metadata=bearer(b_token),
        ),
        users.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(b_token)),
        users.stub.DeleteUser(pb.DeleteUserRequest(name=victim.name), metadata=bearer(b_token)),
        users.stub.ListSessions(
            pb.ListSessionsRequest(parent=victim.name), metadata=bearer(b_token)
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await users.repository.get_user(victim.id)).status == "active"


async def test_migration_002_deletes_the_grants_the_table_refuses(users: UsersEnv) -> None:
    service, _ = await users.user_with_token("service")
    b, _ = await users.user_with_token("user")
    rows = [
        (b.id, "users.create", "*", False),
        (b.id, "sessions.read", "users/*", False),
        (b.id, "jobs.create", "job-types/users.purge", False),
        (b.id, "files.read", "*", False),
        (b.id, "files.read", "files/abc", True),
        (b.id, "jobs.cancel", "batches/*", True),
        (service.id, "jobs.create", "job-types/users.purge", True),
        (service.id, "jobs.create", "job-types/*", False),
    ]
    for user_id, perm, resource, _ in rows:
        await users.repository.grant(
            user_id=user_id, permission=perm, resource=resource, creator="x"
        )
    sql = (
        Path(__file__).parents[2] / "services/users/sql/migrations/002_grant_table.sql"
    ).read_text()
    await users.ctx.pool.execute(sql)
    left = {
        (r["user_id"], r["permission"], r["resource"])
        for r in await users.ctx.pool.fetch("SELECT * FROM users.grants")
    }
    assert left == {(u, p, r) for u, p, r, keep in rows if keep}
    roles = {b.id: "user", service.id: "service"}
    for u, p, r, keep in rows:  # the SQL and the Python rule agree
        assert grants.honoured(roles[u], p, r) is keep  # type: ignore[arg-type]
