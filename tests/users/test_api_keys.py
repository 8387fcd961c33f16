"""API keys of service users: creation rules, the scope, expiry, revocation within the auth
cache TTL, the activity log, a worker running jobs with a key, and the key format's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.jobs.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from mediagrid.users.v1 import user_service_pb2 as pb
from pydantic import SecretStr

from common import errors
from common.auth import CachingAuthenticator, RemoteAuthenticator
from common.dependencies import Dependencies
from common.grpc_errors import error_info
from services.users import api_keys
from services.users.permissions import SERVICE_DEFAULTS, effective_permissions
from services.users.sessions import token_hash
from tests.support.auth import bearer
from tests.users.conftest import UsersEnv, start_users


def _code_and_reason(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info(exc)
    return exc.code(), info.reason if info is not None else ""


async def _refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return _code_and_reason(caught.value)


async def _service_user(env: UsersEnv, admin: str) -> str:
    """A service user made through CreateUser without a password (no service needs one)."""
    response = await env.stub.CreateUser(
        pb.CreateUserRequest(user=pb.User(email="worker@example.com", role=pb.ROLE_SERVICE)),
        metadata=bearer(admin),
    )
    assert not response.user.has_password
    return str(response.user.name)


async def _create_key(env: UsersEnv, admin: str, parent: str, **fields: Any) -> Any:
    expire = fields.pop("expire_time", None)
    key = pb.ApiKey(**fields)
    if expire is not None:
        key.expire_time.FromDatetime(expire)
    return await env.stub.CreateApiKey(
        pb.CreateApiKeyRequest(parent=parent, api_key=key), metadata=bearer(admin)
    )


async def test_a_key_authenticates_as_its_service_user_and_is_shown_once(users: UsersEnv) -> None:
    _, admin = await users.user_with_token("admin")
    service = await _service_user(users, admin)
    created = await _create_key(users, admin, service, display_name="video workers")
    assert created.key.startswith("mgk_") and created.api_key.name.startswith(f"{service}/apiKeys/")
    assert created.api_key.active and not created.api_key.HasField("expire_time")
    me = await users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(created.key))
    assert me.user.name == service
    principal = (await users.stub.Authenticate(pb.AuthenticateRequest(token=created.key))).principal
    assert principal.api_key == created.api_key.name and principal.session == ""
    assert set(principal.permissions) == {f"{p}:*" for p in SERVICE_DEFAULTS}
    listed = await users.stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=service), metadata=bearer(admin)
    )
    assert [k.name for k in listed.api_keys] == [created.api_key.name]
    assert created.key not in str(listed)  # the secret is never shown again
    async with users.ctx.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT secret_hash FROM users.api_keys")
    parsed = api_keys.parse_key(created.key)
    assert parsed is not None and parsed[0] == created.api_key.name.rsplit("/", 1)[-1]
    assert bytes(stored) == token_hash(parsed[1])  # only the hash is stored


async def test_only_admins_manage_keys_and_only_for_active_service_users(users: UsersEnv) -> None:
    admin_user, admin = await users.user_with_token("admin")
    person, person_token = await users.user_with_token("user")
    service_user, service_token = await users.user_with_token("service")
    key = (await _create_key(users, admin, service_user.name)).key
    for token in (person_token, service_token, key):
        for call in (
            users.stub.CreateApiKey(
                pb.CreateApiKeyRequest(parent=service_user.name), metadata=bearer(token)
            ),
            users.stub.ListApiKeys(pb.ListApiKeysRequest(parent="users/-"), metadata=bearer(token)),
            users.stub.RevokeApiKey(
                pb.RevokeApiKeyRequest(name=f"{service_user.name}/apiKeys/abc"),
                metadata=bearer(token),
            ),
        ):
            assert await _refused(call) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    for parent in (person.name, admin_user.name):
        assert await _refused(_create_key(users, admin, parent)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_A_SERVICE_USER",
        )
    assert await _refused(_create_key(users, admin, "users/nosuchuser")) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )


async def test_the_scope_is_a_subset_of_the_users_permissions(users: UsersEnv) -> None:
    _, admin = await users.user_with_token("admin")
    service = (await users.add_user("service")).name
    refused = [
        {"permissions": ["files.delete"]},  # not a service permission
        {"permissions": ["no.such"]},
        {"permissions": ["files.read", "files.read"]},
        {"permissions": ["files.read"], "job_types": ["video.probe"]},  # no jobs.work
        {"job_types": ["Not A Type"]},
        {"expire_time": datetime.now(UTC) - timedelta(minutes=1)},
    ]
    for fields in refused:
        code, _ = await _refused(_create_key(users, admin, service, **fields))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, fields
    scoped = await _create_key(
        users, admin, service, permissions=["jobs.work", "files.read"], job_types=["video.probe"]
    )
    principal = (await users.stub.Authenticate(pb.AuthenticateRequest(token=scoped.key))).principal
    assert set(principal.permissions) == {"jobs.work:job-types/video.probe", "files.read:*"}
    # users.read is out of the scope: the role alone no longer lets the key read itself.
    assert await _refused(
        users.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(scoped.key))
    ) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


async def test_expired_revoked_and_wrong_keys_are_refused(
    suite: Callable[..., Any], password_hash: str
) -> None:
    env = await start_users(suite, password_hash, auth_cache_ttl_seconds=60)
    admin_user, admin = await env.user_with_token("admin")
    service = (await env.add_user("service")).name
    expiring = await _create_key(
        env, admin, service, expire_time=datetime.now(UTC) + timedelta(hours=1)
    )
    revoked = await _create_key(env, admin, service)
    kept = await _create_key(env, admin, service)

    def whoami(token: str) -> Any:
        return env.stub.GetUser(pb.GetUserRequest(name="users/me"), metadata=bearer(token))

    await whoami(revoked.key)  # now in the cache (60 s)
    response = await env.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(name=revoked.api_key.name), metadata=bearer(admin)
    )
    assert response.api_key.HasField("revoke_time") and not response.api_key.active
    # In the users process the revocation evicts the cached principal at once.
    assert await _refused(whoami(revoked.key)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_REVOKED",
    )
    async with env.ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE users.api_keys SET expire_time = now() - interval '1 second' WHERE id = $1",
            expiring.api_key.name.rsplit("/", 1)[-1],
        )
    assert await _refused(whoami(expiring.key)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_EXPIRED",
    )
    key_id = kept.api_key.name.rsplit("/", 1)[-1]
    for bad in (f"mgk_{key_id}_{'A' * 43}", "mgk_short", f"mgk_{'a' * 16}_{'B' * 43}"):
        assert await _refused(whoami(bad)) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    assert (await whoami(kept.key)).user.name == service
    active = await env.stub.ListApiKeys(
        pb.ListApiKeysRequest(parent="users/-"), metadata=bearer(admin)
    )
    assert [k.name for k in active.api_keys] == [kept.api_key.name]
    everything: list[str] = []
    page_token = ""
    while True:
        page = await env.stub.ListApiKeys(
            pb.ListApiKeysRequest(
                parent=service, show_inactive=True, page_size=2, page_token=page_token
            ),
            metadata=bearer(admin),
        )
        everything += [k.name for k in page.api_keys]
        page_token = page.next_page_token
        if not page_token:
            break
    assert everything == [expiring.api_key.name, revoked.api_key.name, kept.api_key.name]
    activity = await env.stub.ListActivity(
        pb.ListActivityRequest(parent=admin_user.name, action="users.*"), metadata=bearer(admin)
    )
    recorded = {(e.action, e.resource) for e in activity.entries}
    assert ("users.create_api_key", kept.api_key.name) in recorded
    assert ("users.revoke_api_key", revoked.api_key.name) in recorded
    created = next(e for e in activity.entries if e.resource == expiring.api_key.name)
    assert created.metadata["user"] == service and created.metadata["permissions"] == "*"


async def test_revocation_reaches_other_processes_within_the_cache_ttl(users: UsersEnv) -> None:
    ttl = 0.5
    _, admin = await users.user_with_token("admin")
    service = (await users.add_user("service")).name
    created = await _create_key(users, admin, service)
    elsewhere = CachingAuthenticator(
        RemoteAuthenticator(
            lambda: users.channel, Dependencies(users.settings).peer("users"), timeout_seconds=5.0
        ),
        ttl,
    )
    principal = await elsewhere.authenticate(created.key)
    assert principal.api_key == created.api_key.name and principal.role == "service"
    await users.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(name=created.api_key.name), metadata=bearer(admin)
    )
    await asyncio.sleep(ttl * 1.5)
    with pytest.raises(errors.Unauthenticated) as caught:
        await elsewhere.authenticate(created.key)
    assert caught.value.reason == "API_KEY_REVOKED"


async def test_a_worker_runs_jobs_with_a_key_limited_to_its_job_types(
    suite: Callable[..., Any], password_hash: str
) -> None:
    from services.jobs.worker.main import run_worker
    from services.users.passwords import Passwords
    from services.users.repository import UserRepository
    from services.users.sessions import SessionManager

    server, ctx, channel = await suite("users", "jobs", demo_job_types=True)
    repository = UserRepository(ctx.pool)
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    env = UsersEnv(server, ctx, channel, None, repository, sessions, ctx.settings, password_hash)  # type: ignore[arg-type]
    from mediagrid.users.v1 import user_service_pb2_grpc

    env.stub = user_service_pb2_grpc.UserServiceStub(channel)
    _, admin = await env.user_with_token("admin")
    _, owner = await env.user_with_token("user")
    service = (await env.add_user("service")).name
    key = (
        await _create_key(env, admin, service, permissions=["jobs.work"], job_types=["noop"])
    ).key
    workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
    assert await _refused(
        workers.ClaimJobs(
            worker_service_pb2.ClaimJobsRequest(worker_id="w", types=["sleep"], max_jobs=1),
            metadata=bearer(key),
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TYPE_NOT_CLAIMABLE")
    no_work = (await _create_key(env, admin, service, permissions=["jobs.read"])).key
    assert await _refused(
        workers.ClaimJobs(
            worker_service_pb2.ClaimJobsRequest(worker_id="w", types=["noop"], max_jobs=1),
            metadata=bearer(no_work),
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_WORKER")
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    # jobs.create is out of the key's scope, although the service role holds it.
    assert await _refused(
        jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop")),
            metadata=bearer(key),
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TYPE_NOT_ALLOWED")
    job = (
        await jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop")),
            metadata=bearer(owner),
        )
    ).job
    # `mediagrid worker` with MEDIAGRID_WORKER_API_KEY (and a stale password-era token beside
    # it, which the key wins over).
    settings = ctx.settings.model_copy(
        update={"worker_api_key": SecretStr(key), "worker_token": SecretStr("mgs_" + "x" * 43)}
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            settings,
            types=["noop"],
            address=server.address,
            stop=stop,
            handle_signals=False,
            worker_id="key-worker",
        )
    )
    try:
        for _ in range(600):
            state = (
                await jobs.GetJob(
                    job_service_pb2.GetJobRequest(name=job.name), metadata=bearer(owner)
                )
            ).job.state
            if state == job_pb2.JOB_STATE_SUCCEEDED or worker.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, 30)
    assert state == job_pb2.JOB_STATE_SUCCEEDED
    assert stats.succeeded == 1


def test_the_key_format_round_trips_and_only_hashes_are_compared() -> None:
    key, hashed = api_keys.new_key("abcdefghijklmnop")
    assert api_keys.parse_key(key) == ("abcdefghijklmnop", key[len("mgk_abcdefghijklmnop_") :])
    assert token_hash(key[len("mgk_abcdefghijklmnop_") :]) == hashed
    assert api_keys.is_api_key(key) and not api_keys.is_api_key("mgs_" + "a" * 43)


@given(st.text(max_size=80))
def test_parse_key_accepts_only_the_key_format(token: str) -> None:
    parsed = api_keys.parse_key(token)
    if parsed is not None:
        assert token == f"mgk_{parsed[0]}_{parsed[1]}" and len(parsed[1]) == 43


_PERMS = sorted(SERVICE_DEFAULTS)
_TYPES = st.lists(st.sampled_from(["video.probe", "users.purge", "noop", "a.b"]), unique=True)
_GRANTS = st.lists(
    st.sampled_from(
        ["files.read:files/x", "jobs.create:job-types/video.probe", "jobs.read:jobs/*", "bad:*"]
    ),
    unique=True,
)


@given(
    grants=_GRANTS,
    permissions=st.lists(st.sampled_from(_PERMS), unique=True),
    job_types=_TYPES,
)
def test_a_keys_scope_never_exceeds_its_users_permissions(
    grants: list[str], permissions: list[str], job_types: list[str]
) -> None:
    held = effective_permissions("service", grants)
    scoped = api_keys.scoped_permissions(held, permissions, job_types)
    names = api_keys.permission_names(scoped)
    assert not permissions or names <= set(permissions)
    claimable = {e for e in scoped if e.startswith("jobs.work:")}
    others = scoped - claimable
    assert others <= held  # nothing but narrowed jobs.work entries is new
    if job_types and (not permissions or "jobs.work" in permissions):
        assert claimable == {f"jobs.work:job-types/{t}" for t in job_types}
    elif not job_types:
        assert claimable <= held
    violations = api_keys.scope_violations(held, permissions, job_types, "api_key")
    assert not violations or (job_types and permissions and "jobs.work" not in permissions)


def test_expiry_must_lie_in_the_future() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert api_keys.expiry(None, "f", now) is None
    assert api_keys.expiry(now + timedelta(seconds=1), "f", now) == now + timedelta(seconds=1)
    with pytest.raises(errors.InvalidArgument):
        api_keys.expiry(now, "f", now)


def test_role_checks_of_the_other_services_apply_a_keys_scope() -> None:
    from common.context import Principal
    from services.files.access import bypasses_shares, is_privileged
    from services.jobs import access as jobs_access

    session = Principal(
        name="users/svc",
        user_id="svc",
        role="service",
        permissions=frozenset({"files.read:*", "jobs.work:job-types/noop"}),
    )
    key = session.model_copy(update={"api_key": "users/svc/apiKeys/k"})
    # A session is let in by its role, as before; a key only within its permissions.
    assert bypasses_shares(session, "write") and not bypasses_shares(key, "write")
    assert bypasses_shares(key, "read") and is_privileged(key)
    assert not is_privileged(key.model_copy(update={"permissions": frozenset()}))
    jobs_access.require_claimable(key, ["noop"])
    jobs_access.require_claimable(session, ["noop", "sleep"])
    with pytest.raises(errors.PermissionDenied) as caught:
        jobs_access.require_claimable(key, ["noop", "sleep"])
    assert caught.value.reason == "JOB_TYPE_NOT_CLAIMABLE"


def test_a_scope_names_at_most_the_whole_vocabulary() -> None:
    from services.users.permissions import VOCABULARY

    held = effective_permissions("service", [])
    too_many = [*sorted(SERVICE_DEFAULTS)] * 3
    violations = api_keys.scope_violations(held, too_many, [], "api_key")
    assert violations[0].field == "api_key.permissions" and str(len(VOCABULARY)) in (
        violations[0].description
    )
    assert not api_keys.scope_violations(held, sorted(SERVICE_DEFAULTS), [], "api_key")
