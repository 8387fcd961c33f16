"""The hygiene layer in front of the users service: NUL characters (anonymous Login
included) and out-of-range Timestamps are INVALID_ARGUMENT naming the field, before any
handler runs, with nothing logged and nothing stored."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2
from mediagrid.users.v1 import user_service_pb2 as pb

from tests.common.hygiene_support import Case, check_cases, unary
from tests.support.auth import bearer
from tests.users.conftest import PASSWORD, UsersEnv

FAR = timestamp_pb2.Timestamp(seconds=253_402_300_800)  # 10000-01-01
BEFORE_YEAR_1 = timestamp_pb2.Timestamp(seconds=-62_135_596_801)
NUL = "NUL_IN_STRING"
TS = "TIMESTAMP_OUT_OF_RANGE"


def _cases(env: UsersEnv, admin: str, user: str) -> list[Case]:
    stub = env.stub
    md, admin_md = bearer(user), bearer(admin)
    return [
        (
            "anonymous Login email",
            unary(stub.Login, pb.LoginRequest(email="a\x00@b.c", password=PASSWORD), ()),
            NUL,
            "email",
        ),
        (
            "anonymous Login password",
            unary(stub.Login, pb.LoginRequest(email="a@b.c", password="p\x00"), ()),
            NUL,
            "password",
        ),
        (
            "CreateUser email",
            unary(
                stub.CreateUser,
                pb.CreateUserRequest(user=pb.User(email="x\x00@b.c"), password=PASSWORD),
                admin_md,
            ),
            NUL,
            "user.email",
        ),
        (
            "CreateUser display_name",
            unary(
                stub.CreateUser,
                pb.CreateUserRequest(
                    user=pb.User(email="x@b.c", display_name="X\x00"), password=PASSWORD
                ),
                admin_md,
            ),
            NUL,
            "user.display_name",
        ),
        (
            "GetUser name",
            unary(stub.GetUser, pb.GetUserRequest(name="users/\x00"), md),
            NUL,
            "name",
        ),
        (
            "ChangePassword new_password",
            unary(
                stub.ChangePassword,
                pb.ChangePasswordRequest(
                    name="users/me", current_password=PASSWORD, new_password="n\x00" * 8
                ),
                md,
            ),
            NUL,
            "new_password",
        ),
        (
            "Authenticate token",
            unary(stub.Authenticate, pb.AuthenticateRequest(token="t\x00"), md),
            NUL,
            "token",
        ),
        (
            "GrantPermission resource",
            unary(
                stub.GrantPermission,
                pb.GrantPermissionRequest(
                    parent="users/x", permission="files.read", resource="files/\x00"
                ),
                admin_md,
            ),
            NUL,
            "resource",
        ),
        (
            "CheckPermission permission",
            unary(
                stub.CheckPermission,
                pb.CheckPermissionRequest(
                    principal="users/x", permission="\x00", resource="files/a"
                ),
                admin_md,
            ),
            NUL,
            "permission",
        ),
        (
            "RecordActivity metadata value",
            unary(
                stub.RecordActivity,
                pb.RecordActivityRequest(
                    action="files.read", resource="files/a", metadata={"k": "v\x00"}
                ),
                admin_md,
            ),
            NUL,
            "metadata.k",
        ),
        (
            "RecordActivity metadata key",
            unary(
                stub.RecordActivity,
                pb.RecordActivityRequest(
                    action="files.read", resource="files/a", metadata={"a b\x00": "v"}
                ),
                admin_md,
            ),
            NUL,
            "metadata.`a b\\u0000`",
        ),
        (
            "ListActivity start_time",
            unary(stub.ListActivity, pb.ListActivityRequest(parent="users/me", start_time=FAR), md),
            TS,
            "start_time",
        ),
        (
            "ListActivity end_time",
            unary(
                stub.ListActivity,
                pb.ListActivityRequest(parent="users/me", end_time=BEFORE_YEAR_1),
                md,
            ),
            TS,
            "end_time",
        ),
        (
            "ListActivity nanos",
            unary(
                stub.ListActivity,
                pb.ListActivityRequest(
                    parent="users/me", end_time=timestamp_pb2.Timestamp(nanos=10**9)
                ),
                md,
            ),
            TS,
            "end_time",
        ),
        (
            "ListActivity action",
            unary(stub.ListActivity, pb.ListActivityRequest(parent="users/me", action="\x00"), md),
            NUL,
            "action",
        ),
        (
            "ListPermissions resource",
            unary(
                stub.ListPermissions,
                pb.ListPermissionsRequest(parent="users/me", resource="\x00"),
                md,
            ),
            NUL,
            "resource",
        ),
    ]


async def _counts(env: UsersEnv) -> tuple[int, ...]:
    async with env.ctx.pool.acquire() as conn:
        return tuple(
            [
                await conn.fetchval(f"SELECT count(*) FROM users.{table}")
                for table in ("users", "activity", "grants", "sessions")
            ]
        )


async def test_bad_input_is_refused_before_any_handler(
    users: UsersEnv, caplog: pytest.LogCaptureFixture
) -> None:
    _, admin = await users.user_with_token("admin")
    _, user = await users.user_with_token("user")
    before = await _counts(users)
    await check_cases(_cases(users, admin, user), caplog)
    assert await _counts(users) == before


async def test_authentication_comes_first(users: UsersEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.ListActivity(pb.ListActivityRequest(parent="users/me", start_time=FAR))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "edge",
    [
        timestamp_pb2.Timestamp(seconds=-62_135_596_800),
        timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    ],
    ids=["year 1", "year 9999"],
)
async def test_time_filters_at_the_limits_pass_and_are_never_internal(
    users: UsersEnv, edge: timestamp_pb2.Timestamp
) -> None:
    _, user = await users.user_with_token("user")
    for request in (
        pb.ListActivityRequest(parent="users/me", start_time=edge),
        pb.ListActivityRequest(parent="users/me", end_time=edge),
    ):
        await users.stub.ListActivity(request, metadata=bearer(user))  # OK, maybe empty
