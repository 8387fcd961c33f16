"""Bad input: INVALID_ARGUMENT with field violations naming the field, and nothing stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from mediagrid.users.v1 import user_service_pb2 as pb

from common.grpc_errors import bad_request
from tests.support.auth import bearer
from tests.users.conftest import UsersEnv

pytestmark = pytest.mark.asyncio(loop_scope="module")

SQLISH = "x'); DROP TABLE users.users; --"


async def _counts(env: UsersEnv) -> tuple[int, ...]:
    async with env.ctx.pool.acquire() as conn:
        return tuple(
            [
                await conn.fetchval(f"SELECT count(*) FROM users.{table}")
                for table in ("users", "activity", "grants", "sessions")
            ]
        )


def _create(**user: Any) -> Callable[[UsersEnv, Any], Awaitable[Any]]:
    password = user.pop("password", "a perfectly fine passphrase")

    async def call(env: UsersEnv, md: Any) -> Any:
        return await env.stub.CreateUser(
            pb.CreateUserRequest(user=pb.User(**user), password=password), metadata=md
        )

    return call


def _list_users(**kwargs: Any) -> Callable[[UsersEnv, Any], Awaitable[Any]]:
    async def call(env: UsersEnv, md: Any) -> Any:
        return await env.stub.ListUsers(pb.ListUsersRequest(**kwargs), metadata=md)

    return call


def _record(**kwargs: Any) -> Callable[[UsersEnv, Any], Awaitable[Any]]:
    kwargs.setdefault("action", "files.read")
    kwargs.setdefault("resource", "files/abc")

    async def call(env: UsersEnv, md: Any) -> Any:
        return await env.stub.RecordActivity(pb.RecordActivityRequest(**kwargs), metadata=md)

    return call


def _grant(**kwargs: Any) -> Callable[[UsersEnv, Any], Awaitable[Any]]:
    async def call(env: UsersEnv, md: Any) -> Any:
        target = await env.add_user("user")
        kwargs.setdefault("parent", target.name)
        return await env.stub.GrantPermission(pb.GrantPermissionRequest(**kwargs), metadata=md)

    return call


async def _update_unknown_path(env: UsersEnv, md: Any) -> Any:
    target = await env.add_user("user")
    return await env.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=target.name, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["password_hash"]),
        ),
        metadata=md,
    )


async def _update_to_deleted(env: UsersEnv, md: Any) -> Any:
    target = await env.add_user("user")
    return await env.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=target.name, status=pb.USER_STATUS_DELETED),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=md,
    )


async def _foreign_page_token(env: UsersEnv, md: Any) -> Any:
    for _ in range(2):
        await env.add_user("service")
    page = await env.stub.ListUsers(
        pb.ListUsersRequest(page_size=1, role=pb.ROLE_SERVICE), metadata=md
    )
    assert page.next_page_token
    # The same token with another filter is a token of another query.
    return await env.stub.ListUsers(
        pb.ListUsersRequest(page_size=1, role=pb.ROLE_USER, page_token=page.next_page_token),
        metadata=md,
    )


async def _activity_time_range(env: UsersEnv, md: Any) -> Any:
    return await env.stub.ListActivity(
        pb.ListActivityRequest(
            parent="users/me",
            start_time=timestamp_pb2.Timestamp(seconds=2000),
            end_time=timestamp_pb2.Timestamp(seconds=1000),
        ),
        metadata=md,
    )


CASES: list[tuple[str, Callable[[UsersEnv, Any], Awaitable[Any]], list[str]]] = [
    ("malformed email", _create(email="not-an-email"), ["user.email"]),
    ("empty email", _create(email=""), ["user.email"]),
    ("huge email", _create(email="a" * 300 + "@example.com"), ["user.email"]),
    ("sql in email", _create(email=SQLISH + "@example.com"), ["user.email"]),
    (
        "huge display name",
        _create(email="h@example.com", display_name="x" * 5000),
        ["user.display_name"],
    ),
    (
        "control chars in display name",
        _create(email="c@example.com", display_name="a\x07b"),
        ["user.display_name"],
    ),
    ("unknown role", _create(email="r@example.com", role=99), ["user.role"]),
    (
        "several at once",
        _create(email="bad", display_name="y" * 500, role=42),
        ["user.email", "user.display_name", "user.role"],
    ),
    ("empty password", _create(email="p@example.com", password=""), ["password"]),
    ("huge password", _create(email="p@example.com", password="pw" * 1000), ["password"]),
    ("negative page size", _list_users(page_size=-1), ["page_size"]),
    ("garbage page token", _list_users(page_token="!!!not-a-token"), ["page_token"]),
    (
        "forged page token",
        _list_users(page_token="eyJxIjoiMCIsImsiOlsiYSIsImIiXX0"),
        ["page_token"],
    ),
    ("page token of another query", _foreign_page_token, ["page_token"]),
    ("unknown status filter", _list_users(status=7), ["status"]),
    ("bad action", _record(action="DROP TABLE"), ["action"]),
    ("sql in resource", _record(resource=SQLISH), ["resource"]),
    ("huge resource", _record(resource="files/" + "a" * 1000), ["resource"]),
    ("too much metadata", _record(metadata={f"k{i}": "v" for i in range(40)}), ["metadata"]),
    ("huge metadata value", _record(metadata={"k": "v" * 5000}), ["metadata['k']"]),
    ("bad metadata key", _record(metadata={"bad key!": "v"}), ["metadata['bad key!']"]),
    ("bad actor", _record(actor="admin"), ["actor"]),
    ("unknown permission", _grant(permission="files.destroy", resource="files/a"), ["permission"]),
    ("bad resource pattern", _grant(permission="files.read", resource="files/*/x"), ["resource"]),
    (
        "bad grant parent",
        _grant(parent="users/../x", permission="files.read", resource="*"),
        ["parent"],
    ),
    ("unknown update path", _update_unknown_path, ["update_mask"]),
    ("status deleted via update", _update_to_deleted, ["user.status"]),
    ("inverted time range", _activity_time_range, ["end_time"]),
]


@pytest.mark.parametrize(("call", "fields"), [pytest.param(c, f, id=i) for i, c, f in CASES])
async def test_bad_input_is_rejected_and_nothing_stored(
    module_users: UsersEnv, call: Callable[[UsersEnv, Any], Awaitable[Any]], fields: list[str]
) -> None:
    env = module_users
    _, token = await env.user_with_token("admin")
    before = await _counts(env)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(env, bearer(token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    bad = bad_request(caught.value)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == fields
    after = await _counts(env)
    # Fixture-style helpers may add a target user; nothing else may change.
    assert after[1:] == before[1:]
    assert after[0] - before[0] <= 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        (
            "RecordActivity",
            _field(1, b"files.read")
            + _field(2, b"files/a")
            + _field(3, _field(1, b"k") + _field(2, b"\xff\xfe")),
            "metadata",
        ),
        ("RecordActivity", _field(1, b"files.read") + _field(2, b"files/\xc3"), "resource"),
        (
            "CreateUser",
            _field(1, _field(2, b"x@example.com") + _field(3, b"\xed\xa0\x80")),
            "user.display_name",
        ),
    ],
)
async def test_invalid_utf8_is_invalid_argument(
    module_users: UsersEnv, method: str, body: bytes, field: str
) -> None:
    env = module_users
    _, token = await env.user_with_token("admin")
    before = await _counts(env)
    call = env.channel.unary_unary(
        f"/mediagrid.users.v1.UserService/{method}",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(body, metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None and [v.field for v in bad.field_violations] == [field]
    assert await _counts(env) == before


async def test_invalid_utf8_from_anonymous_is_still_unauthenticated(module_users: UsersEnv) -> None:
    call = module_users.channel.unary_unary(
        "/mediagrid.users.v1.UserService/RecordActivity",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(_field(1, b"\xff"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_sql_looking_display_name_is_stored_verbatim(module_users: UsersEnv) -> None:
    env = module_users
    _, token = await env.user_with_token("admin")
    created = await env.stub.CreateUser(
        pb.CreateUserRequest(
            user=pb.User(email="bobby@example.com", display_name=SQLISH, role=pb.ROLE_SERVICE)
        ),
        metadata=bearer(token),
    )
    fetched = await env.stub.GetUser(
        pb.GetUserRequest(name=created.user.name), metadata=bearer(token)
    )
    assert fetched.user.display_name == SQLISH
    async with env.ctx.pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('users.users')") is not None
