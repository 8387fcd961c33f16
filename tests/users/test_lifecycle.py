"""Grants, activity, stats, deletion with purge, retention sweep, passwords and bootstrap."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from mediagrid.users.v1 import user_service_pb2 as pb

from common.grpc_errors import error_info
from common.settings import Settings
from services.users import app
from services.users.bootstrap import (
    DEV_ADMIN_EMAIL,
    DEV_ADMIN_PASSWORD,
    ensure_bootstrap_admin,
    issue_service_token,
)
from services.users.passwords import Passwords
from services.users.sweep import Sweeper
from tests.support.auth import bearer
from tests.users.conftest import PASSWORD, FakeUsage, UsersEnv, start_users


async def test_grants_drive_check_permission_and_the_principal(users: UsersEnv) -> None:
    _, admin = await users.user_with_token("admin")
    _, service = await users.user_with_token("service")
    grantee, grantee_token = await users.user_with_token()
    granted = await users.stub.GrantPermission(
        pb.GrantPermissionRequest(
            parent=grantee.name, permission="files.read", resource="files/abc"
        ),
        metadata=bearer(service),
    )
    assert granted.created and granted.grant.name.startswith(grantee.name + "/grants/")
    again = await users.stub.GrantPermission(
        pb.GrantPermissionRequest(
            parent=grantee.name, permission="files.read", resource="files/abc"
        ),
        metadata=bearer(admin),
    )
    assert not again.created and again.grant.name == granted.grant.name

    async def check(resource: str, owner: str = "", token: str = grantee_token) -> tuple[bool, str]:
        r = await users.stub.CheckPermission(
            pb.CheckPermissionRequest(
                principal=grantee.name, permission="files.read", resource=resource, owner=owner
            ),
            metadata=bearer(token),
        )
        return r.allowed, r.reason

    assert await check("files/abc") == (True, "GRANT")
    assert await check("files/abc", token=service) == (True, "GRANT")
    assert await check("files/other") == (False, "DENIED")
    assert await check("files/other", owner=grantee.name) == (True, "OWNER")
    principal = (
        await users.stub.Authenticate(pb.AuthenticateRequest(token=grantee_token))
    ).principal
    assert "files.read:files/abc" in principal.permissions

    shares = await users.stub.ListPermissions(
        pb.ListPermissionsRequest(parent="users/-", resource="files/abc"), metadata=bearer(service)
    )
    assert [g.name for g in shares.grants] == [granted.grant.name]
    own = await users.stub.ListPermissions(
        pb.ListPermissionsRequest(parent="users/me"), metadata=bearer(grantee_token)
    )
    assert "files.read" in own.role_permissions and len(own.grants) == 1

    await users.stub.RevokePermission(
        pb.RevokePermissionRequest(name=granted.grant.name), metadata=bearer(service)
    )
    assert await check("files/abc", token=service) == (False, "DENIED")


async def test_activity_is_recorded_and_listed_with_filters(users: UsersEnv) -> None:
    admin, admin_token = await users.user_with_token("admin")
    user, token = await users.user_with_token()
    created = await users.stub.CreateUser(
        pb.CreateUserRequest(user=pb.User(email="svc@example.com", role=pb.ROLE_SERVICE)),
        metadata=bearer(admin_token),
    )
    await users.stub.DeleteUser(
        pb.DeleteUserRequest(name=created.user.name), metadata=bearer(admin_token)
    )
    for i in range(3):
        await users.stub.RecordActivity(
            pb.RecordActivityRequest(
                action="files.create", resource=f"files/f{i}", metadata={"i": str(i)}
            ),
            metadata=(*bearer(token), ("x-request-id", f"req-{i}")),
        )
    mine = await users.stub.ListActivity(
        pb.ListActivityRequest(parent="users/me", page_size=2), metadata=bearer(token)
    )
    assert [e.resource for e in mine.entries] == ["files/f2", "files/f1"]
    assert mine.entries[0].request_id == "req-2" and mine.entries[0].actor == user.name
    rest = await users.stub.ListActivity(
        pb.ListActivityRequest(parent="users/me", page_size=2, page_token=mine.next_page_token),
        metadata=bearer(token),
    )
    assert [e.resource for e in rest.entries] == ["files/f0"] and not rest.next_page_token

    admin_view = await users.stub.ListActivity(
        pb.ListActivityRequest(parent="users/-", action="users.*"), metadata=bearer(admin_token)
    )
    assert [(e.action, e.actor) for e in admin_view.entries] == [
        ("users.delete", admin.name),
        ("users.create", admin.name),
    ]
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    none = await users.stub.ListActivity(
        pb.ListActivityRequest(parent="users/-", start_time=future), metadata=bearer(admin_token)
    )
    assert list(none.entries) == []
    exact = await users.stub.ListActivity(
        pb.ListActivityRequest(parent=admin.name, action="users.delete"),
        metadata=bearer(admin_token),
    )
    assert [e.resource for e in exact.entries] == [created.user.name]


async def test_user_stats_without_jobs_and_files_is_unavailable(users: UsersEnv) -> None:
    _, token = await users.user_with_token()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.GetUserStats(
            pb.GetUserStatsRequest(name="users/me"), metadata=bearer(token)
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE"
    assert info.metadata["service"] == "mediagrid.jobs.v1.JobService"


async def test_user_stats_from_a_usage_source(
    suite: Callable[..., Any], password_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = FakeUsage()
    monkeypatch.setattr(app, "usage_source", lambda ctx: usage)
    env = await start_users(suite, password_hash)
    user, token = await env.user_with_token()
    stats = await env.stub.GetUserStats(
        pb.GetUserStatsRequest(name="users/me"), metadata=bearer(token)
    )
    assert stats.user == user.name
    assert dict(stats.job_counts) == {"JOB_STATE_SUCCEEDED": 3, "JOB_STATE_FAILED": 1}
    assert (stats.file_count, stats.file_bytes) == (2, 2048)
    assert usage.asked == [user.name]


class _Purger:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.purged: list[str] = []

    async def purge(self, user: str) -> None:
        if self.fail:
            from common.errors import Unavailable

            raise Unavailable("jobs is down", reason="DEPENDENCY_UNAVAILABLE")
        self.purged.append(user)


async def test_delete_user_stops_login_and_queues_the_purge(users: UsersEnv) -> None:
    _, admin = await users.user_with_token("admin")
    target = await users.add_user(email="gone@example.com", with_password=True)
    login = await users.stub.Login(pb.LoginRequest(email="gone@example.com", password=PASSWORD))
    deleted = await users.stub.DeleteUser(
        pb.DeleteUserRequest(name=target.name), metadata=bearer(admin)
    )
    assert deleted.user.status == pb.USER_STATUS_DELETED and deleted.user.delete_time.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.Login(pb.LoginRequest(email="gone@example.com", password=PASSWORD))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.Authenticate(pb.AuthenticateRequest(token=login.token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    pending = await users.repository.get_pending_purge(target.id)
    assert pending is not None and pending.done_time is None
    assert pending.attempts == 1
    assert pending.last_error.startswith("DEPENDENCY_UNAVAILABLE: ")

    # The sweep retries (still failing), then succeeds once a purger works.
    async with users.ctx.pool.acquire() as conn:
        await conn.execute("UPDATE users.pending_purges SET next_attempt_time = now()")
    failing = Sweeper(users.repository, users.settings, _Purger(fail=True))
    report = await failing.run_once()
    assert (report.purges_done, report.purges_failed) == (0, 1)
    assert (await users.repository.get_pending_purge(target.id)).attempts == 2  # type: ignore[union-attr]
    async with users.ctx.pool.acquire() as conn:
        await conn.execute("UPDATE users.pending_purges SET next_attempt_time = now()")
    working = _Purger(fail=False)
    report = await Sweeper(users.repository, users.settings, working).run_once()
    assert report.purges_done == 1 and working.purged == [target.name]
    scrubbed = await users.repository.get_user(target.id)
    assert scrubbed.email.endswith("@invalid") and not scrubbed.has_password
    # The address can be used again.
    again = await users.add_user(email="gone@example.com")
    assert again.id != target.id


async def test_the_last_admin_cannot_be_removed(users: UsersEnv) -> None:
    admin, token = await users.user_with_token("admin")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.DeleteUser(pb.DeleteUserRequest(name="users/me"), metadata=bearer(token))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "LAST_ADMIN"  # type: ignore[union-attr]
    await users.add_user("admin")
    deleted = await users.stub.DeleteUser(
        pb.DeleteUserRequest(name=admin.name), metadata=bearer(token)
    )
    assert deleted.user.status == pb.USER_STATUS_DELETED


async def test_sweep_applies_retention_and_takes_turns(users: UsersEnv) -> None:
    user, token = await users.user_with_token()
    old_token = await users.token(user)
    await users.ctx.activity.record("files.create", "files/new", actor=user.name)
    await users.ctx.activity.record("files.create", "files/old", actor=user.name)
    async with users.ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE users.activity SET create_time = now() - interval '400 days' "
            "WHERE resource = 'files/old'"
        )
        await conn.execute(
            "UPDATE users.sessions SET revoke_time = now() - interval '40 days' "
            "WHERE token_hash = $1",
            hashlib.sha256(old_token.encode()).digest(),
        )
        await conn.execute(
            "INSERT INTO users.login_throttle "
            "VALUES ('\\x01', 2, now() - interval '1 day', now() - interval '1 day'), "
            "('\\x02', 2, now(), now())"
        )
    sweeper = Sweeper(users.repository, users.settings, _Purger(fail=False))
    async with users.ctx.pool.acquire() as holder:
        assert await users.repository.try_sweep_lock(holder)
        assert (await sweeper.run_once()).skipped
        await users.repository.sweep_unlock(holder)
    report = await sweeper.run_once()
    assert (report.sessions_deleted, report.activity_deleted, report.login_failures_deleted) == (
        1,
        1,
        1,
    )
    entries = await users.repository.list_activity(
        actor_id=user.id,
        action=None,
        action_prefix=None,
        start=None,
        end=None,
        before_id=None,
        limit=10,
    )
    assert [e.resource for e in entries] == ["files/new"]
    live = await users.ctx.pool.fetch("SELECT key FROM users.login_throttle")
    assert [bytes(r["key"]) for r in live] == [b"\x02"]  # a throttle row in its window stays
    ok = await users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))
    assert ok.user.name == user.name


async def test_change_password_revokes_other_sessions(users: UsersEnv) -> None:
    user = await users.add_user(email="frank@example.com", with_password=True)
    first = await users.stub.Login(pb.LoginRequest(email="frank@example.com", password=PASSWORD))
    second = await users.stub.Login(pb.LoginRequest(email="frank@example.com", password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.stub.ChangePassword(
            pb.ChangePasswordRequest(
                name="users/me", current_password="wrong one!", new_password="brand new passphrase"
            ),
            metadata=bearer(first.token),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    changed = await users.stub.ChangePassword(
        pb.ChangePasswordRequest(
            name="users/me", current_password=PASSWORD, new_password="brand new passphrase"
        ),
        metadata=bearer(first.token),
    )
    assert changed.revoked_sessions == 1
    with pytest.raises(grpc.aio.AioRpcError):
        await users.stub.GetUser(pb.GetUserRequest(name=user.name), metadata=bearer(second.token))
    await users.stub.GetUser(pb.GetUserRequest(name=user.name), metadata=bearer(first.token))
    relogin = await users.stub.Login(
        pb.LoginRequest(email="frank@example.com", password="brand new passphrase")
    )
    assert relogin.token


async def test_login_rehashes_when_parameters_are_raised(
    suite: Callable[..., Any], password_hash: str
) -> None:
    env = await start_users(suite, password_hash, password_hash_time_cost=3)
    user = await env.add_user(email="grace@example.com", with_password=True)
    await env.stub.Login(pb.LoginRequest(email="grace@example.com", password=PASSWORD))
    stored = (await env.repository.get_credentials(user.id)).password_hash
    assert stored is not None and stored != password_hash and ",t=3," in stored
    assert await Passwords.from_settings(env.settings).verify(stored, PASSWORD)


def test_hash_parameters_below_owasp_minimum_are_refused() -> None:
    from pydantic import ValidationError

    for field, value in (("password_hash_memory_kib", 16 * 1024), ("password_hash_time_cost", 1)):
        with pytest.raises(ValidationError):
            Settings(environment="test", **{field: value})


async def test_responses_never_carry_hashes(users: UsersEnv) -> None:
    _, admin = await users.user_with_token("admin")
    await users.add_user(email="hank@example.com", with_password=True)
    login = await users.stub.Login(pb.LoginRequest(email="hank@example.com", password=PASSWORD))
    md = bearer(login.token)
    responses: list[Message] = [
        login,
        await users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=md),
        await users.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(admin)),
        await users.stub.ListSessions(pb.ListSessionsRequest(parent="users/me"), metadata=md),
        await users.stub.Authenticate(pb.AuthenticateRequest(token=login.token)),
        await users.stub.ListActivity(
            pb.ListActivityRequest(parent="users/-"), metadata=bearer(admin)
        ),
        await users.stub.Logout(pb.LogoutRequest(), metadata=md),
    ]
    token_hash = hashlib.sha256(login.token.encode()).digest()
    for response in responses:
        raw = response.SerializeToString()
        assert b"$argon2" not in raw and users.password_hash.encode() not in raw
        assert token_hash not in raw and token_hash.hex().encode() not in raw
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        assert not any("hash" in field.name for field in message.fields), message.name


async def test_bootstrap_admin_in_dev_and_explicit(
    pool: Any, caplog: pytest.LogCaptureFixture, database_dsn: str
) -> None:
    from services.users.repository import UserRepository

    repository = UserRepository(pool)
    passwords = Passwords(memory_kib=19 * 1024, time_cost=2, parallelism=1)
    staging = Settings(environment="staging", database_url=database_dsn)
    assert await ensure_bootstrap_admin(repository, passwords, staging) is None
    dev = Settings(environment="dev", database_url=database_dsn)
    with caplog.at_level(logging.WARNING, logger="mediagrid.users.bootstrap"):
        assert await ensure_bootstrap_admin(repository, passwords, dev) == DEV_ADMIN_EMAIL
    assert "buf curl" in caplog.text and DEV_ADMIN_PASSWORD in caplog.text
    found = await repository.find_credentials(DEV_ADMIN_EMAIL)
    assert found is not None and found.user.role == "admin"
    assert await passwords.verify(found.password_hash, DEV_ADMIN_PASSWORD)
    # Idempotent: a second start finds the admin and creates nothing.
    assert await ensure_bootstrap_admin(repository, passwords, dev) == DEV_ADMIN_EMAIL
    explicit = Settings(
        environment="prod",
        database_url=database_dsn,
        bootstrap_admin_email="root@example.org",
        bootstrap_admin_password="a prod passphrase here",
    )
    assert await ensure_bootstrap_admin(repository, passwords, explicit) == "root@example.org"
    users = await repository.list_users(role="admin", status=None, after=None, limit=10)
    assert sorted(u.email for u in users) == [DEV_ADMIN_EMAIL, "root@example.org"]


async def test_issue_service_token(users: UsersEnv) -> None:
    token = await issue_service_token(users.ctx, "worker@example.com")
    again = await issue_service_token(users.ctx, "worker@example.com")
    assert token != again
    principal = (await users.stub.Authenticate(pb.AuthenticateRequest(token=token))).principal
    assert principal.role == pb.ROLE_SERVICE
    await users.add_user("user", email="human@example.com")
    from common.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        await issue_service_token(users.ctx, "human@example.com")
