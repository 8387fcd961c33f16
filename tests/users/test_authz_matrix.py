"""The authorization matrix: every RPC of UserService x (owner, other user, admin, service,
anonymous), asserting the exact status code of each cell.

"owner" is a regular user acting on their own resources; "other" is a regular user acting on
the owner's resources. Every cell gets fresh users and sessions (a cell may log out or delete).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from mediagrid.users.v1 import user_service_pb2 as pb
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

from services.users.models import User
from services.users.servicer import UserServicer
from tests.support.auth import bearer
from tests.users.conftest import PASSWORD, UsersEnv

pytestmark = pytest.mark.asyncio(loop_scope="module")

OK = grpc.StatusCode.OK
PD = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
CALLERS = ("owner", "other", "admin", "service", "anonymous")


@dataclass
class Cell:
    env: UsersEnv
    owner: User
    owner_token: str
    owner_session: str


Call = Callable[[Cell, Any], Awaitable[Any]]


async def _create_user(c: Cell, md: Any) -> Any:
    return await c.env.stub.CreateUser(
        pb.CreateUserRequest(
            user=pb.User(email=f"new-{c.owner.id}@example.com", role=pb.ROLE_SERVICE)
        ),
        metadata=md,
    )


async def _get_user(c: Cell, md: Any) -> Any:
    return await c.env.stub.GetUser(pb.GetUserRequest(name=c.owner.name), metadata=md)


async def _update_user(c: Cell, md: Any) -> Any:
    return await c.env.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=c.owner.name, display_name="changed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md,
    )


async def _delete_user(c: Cell, md: Any) -> Any:
    return await c.env.stub.DeleteUser(pb.DeleteUserRequest(name=c.owner.name), metadata=md)


async def _list_users(c: Cell, md: Any) -> Any:
    return await c.env.stub.ListUsers(pb.ListUsersRequest(page_size=5), metadata=md)


async def _change_password(c: Cell, md: Any) -> Any:
    return await c.env.stub.ChangePassword(
        pb.ChangePasswordRequest(
            name=c.owner.name, current_password=PASSWORD, new_password="another fine passphrase"
        ),
        metadata=md,
    )


async def _login(c: Cell, md: Any) -> Any:
    return await c.env.stub.Login(
        pb.LoginRequest(email=c.owner.email, password=PASSWORD), metadata=md
    )


async def _logout(c: Cell, md: Any) -> Any:
    return await c.env.stub.Logout(pb.LogoutRequest(), metadata=md)


async def _authenticate(c: Cell, md: Any) -> Any:
    return await c.env.stub.Authenticate(pb.AuthenticateRequest(token=c.owner_token), metadata=md)


async def _list_sessions(c: Cell, md: Any) -> Any:
    return await c.env.stub.ListSessions(pb.ListSessionsRequest(parent=c.owner.name), metadata=md)


async def _revoke_session(c: Cell, md: Any) -> Any:
    return await c.env.stub.RevokeSession(
        pb.RevokeSessionRequest(name=c.owner_session), metadata=md
    )


async def _grant_permission(c: Cell, md: Any) -> Any:
    return await c.env.stub.GrantPermission(
        pb.GrantPermissionRequest(
            parent=c.owner.name, permission="files.read", resource="files/abc"
        ),
        metadata=md,
    )


async def _revoke_permission(c: Cell, md: Any) -> Any:
    grant, _ = await c.env.repository.grant(
        user_id=c.owner.id, permission="files.read", resource="files/xyz", creator="system"
    )
    return await c.env.stub.RevokePermission(
        pb.RevokePermissionRequest(name=grant.name), metadata=md
    )


async def _list_permissions(c: Cell, md: Any) -> Any:
    return await c.env.stub.ListPermissions(
        pb.ListPermissionsRequest(parent=c.owner.name), metadata=md
    )


async def _check_permission(c: Cell, md: Any) -> Any:
    return await c.env.stub.CheckPermission(
        pb.CheckPermissionRequest(
            principal=c.owner.name, permission="files.read", resource="files/abc"
        ),
        metadata=md,
    )


async def _record_activity(c: Cell, md: Any) -> Any:
    return await c.env.stub.RecordActivity(
        pb.RecordActivityRequest(action="files.read", resource="files/abc", actor=c.owner.name),
        metadata=md,
    )


async def _list_activity(c: Cell, md: Any) -> Any:
    return await c.env.stub.ListActivity(pb.ListActivityRequest(parent=c.owner.name), metadata=md)


async def _get_user_stats(c: Cell, md: Any) -> Any:
    return await c.env.stub.GetUserStats(pb.GetUserStatsRequest(name=c.owner.name), metadata=md)


async def _create_api_key(c: Cell, md: Any) -> Any:
    service = await c.env.add_user("service")
    return await c.env.stub.CreateApiKey(pb.CreateApiKeyRequest(parent=service.name), metadata=md)


async def _list_api_keys(c: Cell, md: Any) -> Any:
    return await c.env.stub.ListApiKeys(pb.ListApiKeysRequest(parent="users/-"), metadata=md)


async def _revoke_api_key(c: Cell, md: Any) -> Any:
    from services.users.api_keys import ApiKeyManager, ApiKeyStore

    service = await c.env.add_user("service")
    _, key = await ApiKeyManager(ApiKeyStore(c.env.ctx.pool), c.env.repository).create(
        user_id=service.id,
        creator="system",
        display_name="",
        permissions=[],
        job_types=[],
        expire_time=None,
    )
    return await c.env.stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=key.name), metadata=md)


#               RPC                 call                owner   other   admin   service anonymous
MATRIX: list[tuple[str, Call, tuple[grpc.StatusCode, ...]]] = [
    ("CreateUser", _create_user, (PD, PD, OK, PD, UNAUTH)),
    ("GetUser", _get_user, (OK, PD, OK, OK, UNAUTH)),
    ("UpdateUser", _update_user, (OK, PD, OK, PD, UNAUTH)),
    ("DeleteUser", _delete_user, (OK, PD, OK, PD, UNAUTH)),
    ("ListUsers", _list_users, (PD, PD, OK, PD, UNAUTH)),
    ("ChangePassword", _change_password, (OK, PD, OK, PD, UNAUTH)),
    ("Login", _login, (OK, OK, OK, OK, OK)),
    ("Logout", _logout, (OK, OK, OK, OK, UNAUTH)),
    ("Authenticate", _authenticate, (OK, OK, OK, OK, OK)),
    ("ListSessions", _list_sessions, (OK, PD, OK, PD, UNAUTH)),
    ("RevokeSession", _revoke_session, (OK, PD, OK, PD, UNAUTH)),
    ("GrantPermission", _grant_permission, (PD, PD, OK, OK, UNAUTH)),
    ("RevokePermission", _revoke_permission, (PD, PD, OK, OK, UNAUTH)),
    ("ListPermissions", _list_permissions, (OK, PD, OK, OK, UNAUTH)),
    ("CheckPermission", _check_permission, (OK, PD, OK, OK, UNAUTH)),
    ("RecordActivity", _record_activity, (OK, PD, OK, OK, UNAUTH)),
    ("ListActivity", _list_activity, (OK, PD, OK, PD, UNAUTH)),
    ("GetUserStats", _get_user_stats, (OK, PD, OK, OK, UNAUTH)),
    ("CreateApiKey", _create_api_key, (PD, PD, OK, PD, UNAUTH)),
    ("ListApiKeys", _list_api_keys, (PD, PD, OK, PD, UNAUTH)),
    ("RevokeApiKey", _revoke_api_key, (PD, PD, OK, PD, UNAUTH)),
]

CASES = [
    pytest.param(rpc, call, caller, expected[i], id=f"{rpc}-{caller}")
    for rpc, call, expected in MATRIX
    for i, caller in enumerate(CALLERS)
]


async def test_matrix_covers_every_rpc() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["UserService"].methods_by_name)
    assert {rpc for rpc, _, _ in MATRIX} == methods
    # The servicer implements every RPC of the generated base class (none left UNIMPLEMENTED).
    for method in methods:
        assert getattr(UserServicer, method) is not getattr(pb_grpc.UserServiceServicer, method)


@pytest.mark.parametrize(("rpc", "call", "caller", "expected"), CASES)
async def test_authorization_cell(
    module_users: UsersEnv, rpc: str, call: Call, caller: str, expected: grpc.StatusCode
) -> None:
    env = module_users
    owner = await env.add_user("user", with_password=True)
    owner_token, session = await env.sessions.open_session(owner.id)
    cell = Cell(env=env, owner=owner, owner_token=owner_token, owner_session=session.name)
    tokens = {
        "owner": owner_token,
        "other": (await env.user_with_token("user"))[1],
        "admin": (await env.user_with_token("admin"))[1],
        "service": (await env.user_with_token("service"))[1],
    }
    metadata = bearer(tokens[caller]) if caller in tokens else None
    try:
        await call(cell, metadata)
        code = OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    assert code == expected, f"{rpc} as {caller}: got {code.name}, expected {expected.name}"


async def test_permission_denied_comes_before_not_found(module_users: UsersEnv) -> None:
    env = module_users
    _, other = await env.user_with_token("user")
    _, admin = await env.user_with_token("admin")
    missing = "users/doesnotexist0000"
    for metadata, expected in ((bearer(other), PD), (bearer(admin), grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.stub.GetUser(pb.GetUserRequest(name=missing), metadata=metadata)
        assert caught.value.code() == expected
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.stub.RevokeSession(
                pb.RevokeSessionRequest(name=f"{missing}/sessions/abc"), metadata=metadata
            )
        assert caught.value.code() == expected


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Basic abc", "Bearer mgs_notarealtoken", "Bearer " + "mgs_" + "A" * 43],
)
async def test_bad_tokens_are_unauthenticated(module_users: UsersEnv, header: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await module_users.stub.GetUser(
            pb.GetUserRequest(name="users/me"), metadata=(("authorization", header),)
        )
    assert caught.value.code() == UNAUTH
