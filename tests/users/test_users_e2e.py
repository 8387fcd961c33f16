"""The users service end to end: real channel, real PostgreSQL, the suite interceptor."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from mediagrid.users.v1 import user_service_pb2 as pb

from common.grpc_errors import bad_request, error_info
from tests.support.auth import bearer
from tests.users.conftest import PASSWORD, UsersEnv


async def test_admin_creates_user_who_logs_in_and_reads_themselves(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    created = await users.stub.CreateUser(
        pb.CreateUserRequest(
            user=pb.User(email="Alice@Example.com", display_name="Alice", role=pb.ROLE_USER),
            password="a long enough passphrase",
        ),
        metadata=bearer(admin_token),
    )
    assert created.user.name.startswith("users/")
    assert created.user.status == pb.USER_STATUS_ACTIVE
    assert created.user.has_password

    login = await users.stub.Login(
        pb.LoginRequest(email="alice@example.com", password="a long enough passphrase")
    )
    assert login.token.startswith("mgs_") and len(login.token) == 47
    assert login.session.name.startswith(created.user.name + "/sessions/")
    assert login.session.active and login.session.current

    me = await users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(login.token))
    assert me.user.name == created.user.name
    assert me.user.email == "Alice@example.com"
    assert me.user.last_login_time.seconds > 0


async def test_email_is_unique_without_regard_to_case(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    await users.add_user(email="bob@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.CreateUser(
            pb.CreateUserRequest(user=pb.User(email="BOB@example.com", role=pb.ROLE_SERVICE)),
            metadata=bearer(admin_token),
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(caught.value)
    assert info is not None and info.reason == "EMAIL_TAKEN" and info.domain == "users.mediagrid"


async def test_weak_password_is_rejected_with_field_violation(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.CreateUser(
            pb.CreateUserRequest(user=pb.User(email="weak@example.com"), password="short"),
            metadata=bearer(admin_token),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None and [v.field for v in bad.field_violations] == ["password"]
    assert error_info(caught.value).reason == "WEAK_PASSWORD"  # type: ignore[union-attr]
    assert await users.repository.find_credentials("weak@example.com") is None


async def test_wrong_password_and_unknown_email_look_the_same(users: UsersEnv) -> None:
    await users.add_user(email="carol@example.com", with_password=True)
    failures = []
    for email, password in (
        ("carol@example.com", "wrong password!!"),
        ("nobody@example.com", PASSWORD),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.stub.Login(pb.LoginRequest(email=email, password=password))
        info = error_info(caught.value)
        assert info is not None
        failures.append((caught.value.code(), caught.value.details(), info.reason))
    assert failures[0] == failures[1]
    assert failures[0][0] == grpc.StatusCode.UNAUTHENTICATED


async def test_login_is_rate_limited_per_account_and_address(users: UsersEnv) -> None:
    await users.add_user(email="dave@example.com", with_password=True)
    for _ in range(users.settings.login_max_failures):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.stub.Login(
                pb.LoginRequest(email="dave@example.com", password="not it at all")
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # Even the right password is refused from the address that failed (all calls here
        # come from 127.0.0.1; tests/users/test_login_throttle.py has the other addresses).
        await users.stub.Login(pb.LoginRequest(email="DAVE@example.com", password=PASSWORD))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(caught.value)
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry, "RESOURCE_EXHAUSTED must carry RetryInfo"
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert 0 < info.retry_delay.seconds <= users.settings.login_lockout_seconds
    # Another account is not affected.
    await users.add_user(email="erin@example.com", with_password=True)
    ok = await users.stub.Login(pb.LoginRequest(email="erin@example.com", password=PASSWORD))
    assert ok.token


async def test_update_user_with_mask_and_role_change_revokes_sessions(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    target, target_token = await users.user_with_token("user")
    updated = await users.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(
                name=f"users/{target.id}", display_name="Renamed", email="ignored@example.com"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=bearer(target_token),
    )
    assert updated.user.display_name == "Renamed"
    assert updated.user.email == target.email  # not in the mask: unchanged

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=f"users/{target.id}", role=pb.ROLE_ADMIN),
                update_mask=field_mask_pb2.FieldMask(paths=["role"]),
            ),
            metadata=bearer(target_token),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

    promoted = await users.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=f"users/{target.id}", role=pb.ROLE_SERVICE),
            update_mask=field_mask_pb2.FieldMask(paths=["role"]),
        ),
        metadata=bearer(admin_token),
    )
    assert promoted.user.role == pb.ROLE_SERVICE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.Authenticate(pb.AuthenticateRequest(token=target_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "SESSION_REVOKED"  # type: ignore[union-attr]


async def test_list_users_pages_in_stable_order(users: UsersEnv) -> None:
    _, admin_token = await users.user_with_token("admin")
    for _ in range(5):
        await users.add_user("user")
    seen: list[str] = []
    token = ""
    while True:
        page = await users.stub.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=token, role=pb.ROLE_USER),
            metadata=bearer(admin_token),
        )
        seen.extend(u.name for u in page.users)
        assert len(page.users) <= 2
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 and len(set(seen)) == 5
    everyone = await users.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(admin_token))
    assert [u.name for u in everyone.users if u.role == pb.ROLE_USER] == seen


async def test_authenticate_returns_the_principal(users: UsersEnv) -> None:
    user, token = await users.user_with_token("user")
    response = await users.stub.Authenticate(pb.AuthenticateRequest(token=token))
    principal = response.principal
    assert principal.user == f"users/{user.id}"
    assert principal.role == pb.ROLE_USER
    assert "files.read" in principal.permissions
    assert principal.session.startswith(f"users/{user.id}/sessions/")
