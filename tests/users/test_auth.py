"""Sessions and the shared auth layer: expiry, revocation through the interceptor within the
cache TTL, the cache itself, and the remote authenticator and activity recorder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from mediagrid.users.v1 import user_service_pb2 as pb

from common import errors
from common.auth import (
    CachingAuthenticator,
    RemoteActivityRecorder,
    RemoteAuthenticator,
    remote_authenticator,
)
from common.context import Principal, current_principal_var
from common.dependencies import Dependencies
from common.grpc_errors import error_info
from common.resilience import Dependency
from common.settings import Settings
from tests.support.auth import bearer
from tests.support.metrics import collected_metrics, data_points
from tests.users.conftest import UsersEnv, start_users


async def _expect_unauthenticated(env: UsersEnv, token: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(caught.value)
    assert info is not None
    return info.reason


async def _session_id(env: UsersEnv, token: str) -> str:
    response = await env.stub.Authenticate(pb.AuthenticateRequest(token=token))
    return str(response.principal.session.rsplit("/", 1)[-1])


async def test_idle_and_absolute_expiry(suite: Callable[..., Any], password_hash: str) -> None:
    env = await start_users(suite, password_hash, auth_cache_ttl_seconds=0)
    user, idle_token = await env.user_with_token()
    absolute_token = await env.token(user)
    fresh_token = await env.token(user)
    idle = env.settings.session_idle_timeout_seconds
    async with env.ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE users.sessions SET last_use_time = now() - make_interval(secs => $1) "
            "WHERE id = $2",
            idle + 5,
            await _session_id(env, idle_token),
        )
        await conn.execute(
            "UPDATE users.sessions SET expire_time = now() - interval '1 second' WHERE id = $1",
            await _session_id(env, absolute_token),
        )
    assert await _expect_unauthenticated(env, idle_token) == "SESSION_IDLE"
    assert await _expect_unauthenticated(env, absolute_token) == "SESSION_EXPIRED"
    ok = await env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(fresh_token))
    assert ok.user.name == user.name
    listed = await env.stub.ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(fresh_token)
    )
    assert [s.current for s in listed.sessions] == [True]  # ended sessions are hidden by default
    everything = await env.stub.ListSessions(
        pb.ListSessionsRequest(parent="users/me", show_inactive=True), metadata=bearer(fresh_token)
    )
    assert sorted(s.active for s in everything.sessions) == [False, False, True]


async def test_use_refreshes_last_use_time(suite: Callable[..., Any], password_hash: str) -> None:
    env = await start_users(suite, password_hash, auth_cache_ttl_seconds=0)
    user, token = await env.user_with_token()
    async with env.ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE users.sessions SET last_use_time = now() - interval '10 minutes' "
            "WHERE user_id = $1",
            user.id,
        )
    await env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))
    async with env.ctx.pool.acquire() as conn:
        age = await conn.fetchval(
            "SELECT extract(epoch FROM now() - last_use_time) FROM users.sessions "
            "WHERE user_id = $1",
            user.id,
        )
    assert age < 300


async def test_revocation_in_the_users_process_is_immediate(
    suite: Callable[..., Any], password_hash: str
) -> None:
    env = await start_users(suite, password_hash, auth_cache_ttl_seconds=60)
    _, token = await env.user_with_token()
    _, other_token = await env.user_with_token()
    await env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))  # cached
    session = (await env.stub.Authenticate(pb.AuthenticateRequest(token=token))).principal.session
    await env.stub.RevokeSession(pb.RevokeSessionRequest(name=session), metadata=bearer(token))
    assert await _expect_unauthenticated(env, token) == "SESSION_REVOKED"
    await env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(other_token))
    await env.stub.Logout(pb.LogoutRequest(), metadata=bearer(other_token))
    assert await _expect_unauthenticated(env, other_token) == "SESSION_REVOKED"


def _users_peer(users: UsersEnv) -> Dependency:
    """The users service as another process's peer dependency (its own breaker)."""
    return Dependencies(users.settings).peer("users")


async def test_revocation_reaches_other_processes_within_the_cache_ttl(users: UsersEnv) -> None:
    ttl = 0.5
    _, token = await users.user_with_token()
    # What another service's interceptor uses: a cache in front of the Authenticate RPC.
    elsewhere = CachingAuthenticator(
        RemoteAuthenticator(lambda: users.channel, _users_peer(users), timeout_seconds=5.0), ttl
    )
    principal = await elsewhere.authenticate(token)
    assert principal.session is not None
    await users.stub.RevokeSession(
        pb.RevokeSessionRequest(name=principal.session), metadata=bearer(token)
    )
    await asyncio.sleep(ttl * 1.5)
    with pytest.raises(errors.Unauthenticated) as caught:
        await elsewhere.authenticate(token)
    assert caught.value.reason == "SESSION_REVOKED"


async def test_disabling_a_user_ends_their_sessions(users: UsersEnv) -> None:
    from google.protobuf import field_mask_pb2

    _, admin = await users.user_with_token("admin")
    target, token = await users.user_with_token()
    await users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))  # cached
    await users.stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=target.name, status=pb.USER_STATUS_DISABLED),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=bearer(admin),
    )
    assert await _expect_unauthenticated(users, token) in ("SESSION_REVOKED", "USER_INACTIVE")


class _Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def authenticate(self, token: str) -> Principal:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail or token == "bad":
            raise errors.Unauthenticated("nope", reason="INVALID_TOKEN")
        return Principal(name=f"users/{token}", user_id=token, role="user")


async def test_cache_hits_expires_and_is_bounded() -> None:
    now = [100.0]
    inner = _Counting()
    cache = CachingAuthenticator(inner, 3.0, max_entries=2, clock=lambda: now[0])
    assert (await cache.authenticate("a")).user_id == "a"
    await cache.authenticate("a")
    assert inner.calls == 1
    now[0] += 3.1
    await cache.authenticate("a")
    assert inner.calls == 2
    await cache.authenticate("b")
    await cache.authenticate("c")
    assert len(cache) == 2  # "a" was evicted
    await cache.authenticate("a")
    assert inner.calls == 5
    assert all(key != b"a" and len(key) == 20 for key in cache._entries)  # hashed keys only


async def test_cache_does_not_keep_failures_and_coalesces_lookups() -> None:
    inner = _Counting()
    cache = CachingAuthenticator(inner, 3.0)
    for _ in range(2):
        with pytest.raises(errors.Unauthenticated):
            await cache.authenticate("bad")
    assert inner.calls == 2
    results = await asyncio.gather(*(cache.authenticate("x") for _ in range(20)))
    assert {p.user_id for p in results} == {"x"} and inner.calls == 3
    inner.fail = True
    outcomes = await asyncio.gather(
        *(cache.authenticate("y") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, errors.Unauthenticated) for o in outcomes) and inner.calls == 4


async def test_a_cancelled_lookup_does_not_fail_the_callers_waiting_for_it() -> None:
    inner = _Counting()
    cache = CachingAuthenticator(inner, 3.0)
    leader = asyncio.create_task(cache.authenticate("z"))
    await asyncio.sleep(0)  # the leader is now inside the inner lookup
    follower = asyncio.create_task(cache.authenticate("z"))
    await asyncio.sleep(0)
    leader.cancel()
    assert (await follower).user_id == "z"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert inner.calls == 2


async def test_zero_ttl_disables_the_cache() -> None:
    inner = _Counting()
    cache = CachingAuthenticator(inner, 0)
    await cache.authenticate("a")
    await cache.authenticate("a")
    assert inner.calls == 2 and len(cache) == 0


async def test_remote_authenticator_maps_errors(users: UsersEnv) -> None:
    user, token = await users.user_with_token("service")
    remote = RemoteAuthenticator(lambda: users.channel, _users_peer(users), timeout_seconds=5.0)
    principal = await remote.authenticate(token)
    assert principal.name == user.name and principal.role == "service"
    assert "files.read:*" in principal.permissions
    with pytest.raises(errors.Unauthenticated) as caught:
        await remote.authenticate("mgs_" + "B" * 43)
    assert caught.value.reason == "INVALID_TOKEN"
    dead = grpc.aio.insecure_channel("127.0.0.1:9")  # nothing listens on the discard port
    try:
        with pytest.raises(errors.Unavailable) as down:
            await RemoteAuthenticator(
                lambda: dead, _users_peer(users), timeout_seconds=1.0
            ).authenticate(token)
        assert down.value.reason == "DEPENDENCY_UNAVAILABLE"
        assert down.value.metadata["dependency"] == "users"
    finally:
        await dead.close()


async def test_remote_authenticator_factory_uses_the_users_channel(users: UsersEnv) -> None:
    _, token = await users.user_with_token()
    users.ctx.addresses["users"] = users.server.address
    authenticator = remote_authenticator(users.ctx)
    assert isinstance(authenticator, CachingAuthenticator)
    assert (await authenticator.authenticate(token)).role == "user"


async def test_remote_activity_recorder_forwards_the_callers_token(
    users: UsersEnv, caplog: pytest.LogCaptureFixture
) -> None:
    user, token = await users.user_with_token()
    recorder = RemoteActivityRecorder(
        lambda: users.channel, _users_peer(users), timeout_seconds=5.0
    )
    reset = current_principal_var.set(
        Principal(name=user.name, user_id=user.id, role="user", token=token)
    )
    try:
        await recorder.record("files.delete", "files/abc", {"size": "12"})
        with pytest.raises(errors.PermissionDenied):
            await recorder.record("files.delete", "files/abc", actor="users/someoneelse")
    finally:
        current_principal_var.reset(reset)
    entries = await users.repository.list_activity(
        actor_id=user.id,
        action=None,
        action_prefix=None,
        start=None,
        end=None,
        before_id=None,
        limit=10,
    )
    assert [(e.actor, e.action, e.resource, e.metadata) for e in entries] == [
        (user.name, "files.delete", "files/abc", {"size": "12"})
    ]
    with caplog.at_level(logging.ERROR, logger="mediagrid.auth"):
        await recorder.record("files.create", "files/def")  # no caller: logged, not lost
    assert "files.create" in caplog.text


async def test_cache_results_are_counted(settings: Settings) -> None:
    with collected_metrics(settings) as reader:
        inner = _Counting()
        cache = CachingAuthenticator(inner, 3.0)
        await asyncio.gather(*(cache.authenticate("x") for _ in range(4)))  # 1 miss, 3 shared
        await cache.authenticate("x")  # hit
        await cache.authenticate("w")  # miss
        counts = {
            p.attributes["result"]: p.value for p in data_points(reader, "mediagrid.auth.cache")
        }
    assert counts == {"miss": 2, "shared": 3, "hit": 1}
    assert inner.calls == 2
