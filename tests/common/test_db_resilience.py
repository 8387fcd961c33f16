"""SuitePool, the path of every statement, against a real PostgreSQL (directly, behind
tests/support/proxy.py for outages, and under real gRPC services of the suite): the time bound
and the breaker, pool saturation, the retry of a statement whose pooled connection died, and
the transaction helper (retry on deadlock / serialization failure / lost connection, rollback,
no retry of a COMMIT whose outcome is unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2 as users_pb
from mediagrid.users.v1 import user_service_pb2_grpc as users_grpc
from pydantic import SecretStr

from common import db, deadlines
from common.errors import NotFound, Unavailable
from common.grpc_errors import error_info, retry_info
from common.resilience import BreakerPolicy, CircuitBreaker, CircuitOpen, Dependency
from common.settings import Settings
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.jobs.jobs_support import TEST_JOB_TYPES
from tests.support.auth import bearer
from tests.support.proxy import TcpProxy
from tests.support.rpc import test_settings
from tests.support.stores import with_database


def _settings(**overrides: Any) -> Settings:
    # An application_name of the test's own: kills by name never reach another test's pool.
    overrides.setdefault("service_name", f"dbres-{uuid.uuid4().hex[:8]}")
    return test_settings(**overrides)


@contextlib.asynccontextmanager
async def _pool(
    dsn: str, dependency: Dependency | None = None, **overrides: Any
) -> AsyncIterator[db.SuitePool]:
    settings = _settings(**overrides)
    pool = db.SuitePool(await db.create_pool(settings, dsn), settings, dependency)
    try:
        yield pool
    finally:
        pool.terminate()


def _dependency(timeout: float, **policy: Any) -> Dependency:
    breaker = CircuitBreaker(
        db.DATABASE,
        BreakerPolicy(**policy),
        reason="DATABASE_UNAVAILABLE",
        is_failure=db.connection_failed,
    )
    return Dependency(db.DATABASE, reason="DATABASE_UNAVAILABLE", timeout=timeout, breaker=breaker)


async def _kill(admin: asyncpg.Connection, where: str, *args: Any) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE pid <> pg_backend_pid() AND {where}",
            *args,
        )
    )


async def _kill_when_sleeping(admin: asyncpg.Connection, application_name: str) -> None:
    """Terminate the backend of ``application_name`` once it sits in pg_sleep."""
    for _ in range(500):
        if await _kill(admin, "application_name = $1 AND wait_event = 'PgSleep'", application_name):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never reached pg_sleep")


# --- the time bound and the breaker ----------------------------------------------------------


async def test_a_statement_out_of_time_is_unavailable_and_its_connection_is_not_reused(
    database_dsn: str,
) -> None:
    """One connection in the pool: after a statement hit the bound, the next one runs at once
    (a hung connection handed back would leave it waiting for the pool)."""
    async with _pool(database_dsn, db_pool_min_size=1, db_pool_max_size=1) as pool:
        started = time.monotonic()
        with pytest.raises(db.DatabaseTimeout) as caught:
            await pool.fetchval("SELECT pg_sleep(30)", cap=0.5)
        assert time.monotonic() - started < 10  # far below the statement's 30 s
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert caught.value.metadata["dependency"] == "postgresql"
        assert caught.value.retry_after_seconds
        assert await pool.fetchval("SELECT 41 + 1", cap=2.0) == 42
        assert pool.dependency.breaker.counts() == (2, 1)


async def test_statements_out_of_time_in_a_row_open_the_breaker(database_dsn: str) -> None:
    """A hung database fails each statement only after its bound: too few to fill a window of
    ``min_calls``, but three in a row open the breaker, and then calls are refused at once."""
    dependency = _dependency(0.3, min_calls=100, consecutive_timeouts=3)
    async with _pool(database_dsn, dependency) as pool:
        for _ in range(3):
            with pytest.raises(db.DatabaseTimeout):
                await pool.fetchval("SELECT pg_sleep(30)", cap=0.3)
        assert not dependency.available
        with pytest.raises(CircuitOpen):
            await pool.fetchval("SELECT 1", cap=2.0)


async def test_a_held_connection_closed_by_a_timeout_says_so_on_its_next_statement(
    database_dsn: str,
) -> None:
    async with _pool(database_dsn) as pool, pool.acquire() as conn:
        with pytest.raises(db.DatabaseTimeout):
            await conn.fetchval("SELECT pg_sleep(30)", cap=0.3)
        with pytest.raises(Unavailable) as caught:
            await conn.fetchval("SELECT 1")
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert "closed after an earlier failure" in caught.value.message
    assert pool.dependency.breaker.counts() == (1, 1)  # the refusal is not a second verdict


async def test_the_callers_deadline_bounds_a_statement_without_a_verdict(
    database_dsn: str,
) -> None:
    """Inside an RPC with 0.5 s left the statement gets less than that, and running out of the
    caller's time is no proof against the database (the breaker records nothing)."""
    async with _pool(database_dsn) as pool:
        with deadlines.incoming(0.5), pytest.raises(db.DatabaseTimeout) as caught:
            await pool.fetchval("SELECT pg_sleep(30)")
        assert float(caught.value.metadata["timeout_seconds"]) < 0.5
        assert not caught.value.counts_as_failure
        assert pool.dependency.breaker.counts() == (0, 0)


async def test_a_saturated_pool_is_database_busy_and_not_a_database_failure(
    database_dsn: str,
) -> None:
    async with (
        _pool(database_dsn, db_pool_min_size=1, db_pool_max_size=1) as pool,
        pool.acquire() as held,
    ):
        for _ in range(6):  # more than breaker_min_calls
            with pytest.raises(db.DatabaseBusy) as caught:
                await pool.fetchval("SELECT 1", cap=0.2)
            assert caught.value.reason == "DATABASE_BUSY"
            assert isinstance(caught.value, Unavailable)
        assert pool.dependency.breaker.counts() == (0, 0)
        assert pool.dependency.breaker.state == "closed"
        assert await held.fetchval("SELECT 1") == 1


async def test_health_is_false_while_the_breaker_is_open_and_its_probe_closes_it(
    database_dsn: str,
) -> None:
    dependency = _dependency(2.0, min_calls=2, open_seconds=0.5)
    async with _pool(database_dsn, dependency) as pool:
        assert await db.check_health(pool)
        dependency.breaker.record_failure()
        dependency.breaker.record_failure()
        assert not dependency.available
        assert not await db.check_health(pool)  # the database answers; the circuit is open
        with pytest.raises(Unavailable) as caught:
            await pool.fetchval("SELECT 1", idempotent=True)
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert caught.value.metadata == {"dependency": "postgresql", "circuit": "open"}
        await asyncio.sleep(0.6)
        assert dependency.breaker.state == "half-open"
        assert await db.check_health(pool)  # the health probe is the trial that closes it
        assert dependency.breaker.state == "closed" and dependency.available


# --- dead pooled connections -----------------------------------------------------------------


async def test_a_read_lost_in_flight_is_retried_and_a_write_is_not(
    database_dsn: str, pg_admin_dsn: str
) -> None:
    """The backend is terminated in the middle of a statement; a sequence counts how often the
    statement really ran."""
    statement = "WITH n AS MATERIALIZED (SELECT nextval('runs') AS v) SELECT pg_sleep(0.5) FROM n"
    admin = await asyncpg.connect(pg_admin_dsn)
    async with _pool(database_dsn) as pool:
        name = await pool.fetchval("SELECT current_setting('application_name')")
        await pool.execute("CREATE SEQUENCE runs")
        try:
            killer = asyncio.create_task(_kill_when_sleeping(admin, name))
            await pool.fetchval(statement, idempotent=True)  # killed once, then run again
            await killer
            assert await pool.fetchval("SELECT last_value FROM runs") == 2

            killer = asyncio.create_task(_kill_when_sleeping(admin, name))
            with pytest.raises(Unavailable) as caught:
                await pool.fetchval(statement)
            await killer
            assert caught.value.reason == "DATABASE_UNAVAILABLE"
            assert await pool.fetchval("SELECT last_value FROM runs") == 3  # ran once
        finally:
            await admin.close()


async def test_a_write_after_a_kill_is_never_applied_twice(
    database_dsn: str, pg_admin_dsn: str
) -> None:
    """A write on a connection found dead is sent again only when it never went out: it
    lands at most once (and fails only as UNAVAILABLE)."""
    admin = await asyncpg.connect(pg_admin_dsn)
    outcomes: list[str] = []
    async with _pool(database_dsn, db_pool_min_size=1, db_pool_max_size=1) as pool:
        name = await pool.fetchval("SELECT current_setting('application_name')")
        await pool.execute("CREATE TABLE writes (round int)")
        try:
            for round_ in range(10):
                await pool.fetchval("SELECT 1")  # a live connection to kill
                assert await _kill(admin, "application_name = $1", name) == 1
                try:
                    await pool.execute("INSERT INTO writes VALUES ($1)", round_)
                    outcomes.append("OK")
                except Unavailable as exc:
                    assert exc.reason == "DATABASE_UNAVAILABLE"
                    outcomes.append("UNAVAILABLE")
            counts = await pool.fetch(
                "SELECT round, count(*) AS n FROM writes GROUP BY round", idempotent=True
            )
        finally:
            await admin.close()
    assert all(r["n"] == 1 for r in counts)  # never twice
    # Every OK landed (a refused one was lost in flight: it may or may not have).
    assert {r["round"] for r in counts} >= {i for i, o in enumerate(outcomes) if o == "OK"}
    print(
        f"writes after a kill: {outcomes.count('OK')} OK, {outcomes.count('UNAVAILABLE')} refused"
    )


# --- the transaction helper ------------------------------------------------------------------


async def _counters(pool: db.SuitePool) -> None:
    await pool.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
    await pool.execute("INSERT INTO counters VALUES (1, 0), (2, 0)")


async def _both_ready(flags: list[asyncio.Event], mine: int) -> None:
    flags[mine].set()
    await asyncio.gather(*(flag.wait() for flag in flags))


async def test_a_deadlock_is_retried_as_a_whole_transaction(database_dsn: str) -> None:
    """Two transactions lock the same two rows in opposite order: PostgreSQL aborts one of
    them (40P01); the helper runs that one again and both increments land exactly once."""
    async with _pool(database_dsn, db_pool_max_size=3) as pool:
        await _counters(pool)
        ready = [asyncio.Event(), asyncio.Event()]
        attempts = [0, 0]

        def body(me: int, first: int, second: int) -> Callable[[Any], Awaitable[None]]:
            async def run(conn: db.PooledConnection) -> None:
                attempts[me] += 1
                await conn.execute("UPDATE counters SET n = n + 1 WHERE id = $1", first)
                if attempts[me] == 1:
                    await _both_ready(ready, me)
                await conn.execute("UPDATE counters SET n = n + 1 WHERE id = $1", second)

            return run

        await asyncio.gather(
            pool.transaction(body(0, 1, 2), what="one-two"),
            pool.transaction(body(1, 2, 1), what="two-one"),
        )
        rows = await pool.fetch("SELECT id, n FROM counters ORDER BY id")
    assert sorted(attempts) == [1, 2]  # the deadlock's victim ran twice, the other once
    assert [(r["id"], r["n"]) for r in rows] == [(1, 2), (2, 2)]


async def test_a_serialization_failure_is_retried_and_no_update_is_lost(
    database_dsn: str,
) -> None:
    """Two REPEATABLE READ read-modify-writes of one row: the second to write fails with
    40001; run again, it reads the first one's result, so both increments count."""
    async with _pool(database_dsn, db_pool_max_size=3) as pool:
        await _counters(pool)
        ready = [asyncio.Event(), asyncio.Event()]
        attempts = [0, 0]

        def body(me: int) -> Callable[[Any], Awaitable[None]]:
            async def run(conn: db.PooledConnection) -> None:
                attempts[me] += 1
                n = await conn.fetchval("SELECT n FROM counters WHERE id = 1")
                if attempts[me] == 1:
                    await _both_ready(ready, me)
                await conn.execute("UPDATE counters SET n = $1 WHERE id = 1", n + 1)

            return run

        await asyncio.gather(
            pool.transaction(body(0), isolation="repeatable_read"),
            pool.transaction(body(1), isolation="repeatable_read"),
        )
        assert await pool.fetchval("SELECT n FROM counters WHERE id = 1") == 2
    assert sorted(attempts) == [1, 2]


async def test_a_failing_body_is_rolled_back_and_not_retried(database_dsn: str) -> None:
    async with _pool(database_dsn, db_pool_min_size=1, db_pool_max_size=1) as pool:
        await _counters(pool)
        calls = 0

        async def body(conn: db.PooledConnection) -> None:
            nonlocal calls
            calls += 1
            await conn.execute("UPDATE counters SET n = 99")
            raise NotFound("no such thing")

        with pytest.raises(NotFound):
            await pool.transaction(body)
        assert calls == 1
        # The only connection came back clean (not left inside the failed transaction).
        assert await pool.fetchval("SELECT sum(n) FROM counters") == 0
        assert pool.raw.get_size() == 1


async def test_a_connection_lost_before_commit_reruns_the_whole_transaction(
    database_dsn: str, pg_admin_dsn: str
) -> None:
    admin = await asyncpg.connect(pg_admin_dsn)
    async with _pool(database_dsn) as pool:
        await _counters(pool)
        calls = 0

        async def body(conn: db.PooledConnection) -> str:
            nonlocal calls
            calls += 1
            await conn.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
            if calls == 1:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            return str(await conn.fetchval("SELECT n FROM counters WHERE id = 1"))

        try:
            assert await pool.transaction(body) == "1"
        finally:
            await admin.close()
        assert calls == 2
        assert await pool.fetchval("SELECT n FROM counters WHERE id = 1") == 1  # applied once


async def test_a_connection_lost_during_commit_is_unavailable_and_not_retried(
    database_dsn: str,
) -> None:
    """COMMIT is sent into a stalled proxy whose connections are then cut: the outcome is
    unknown to the client, so the body is not run again and the call says so."""
    database = database_dsn.rsplit("/", 1)[-1].split("?")[0]
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        async with _pool(proxy.dsn(database)) as pool:
            await _counters(pool)
            calls = 0

            async def body(conn: db.PooledConnection) -> None:
                nonlocal calls
                calls += 1
                await conn.execute("UPDATE counters SET n = n + 1")
                proxy.pause()  # COMMIT will not get through...
                asyncio.get_running_loop().call_later(
                    0.3, lambda: asyncio.ensure_future(proxy.close_connections())
                )  # ...and its connection breaks while the client waits for the answer

            with pytest.raises(Unavailable) as caught:
                await pool.transaction(body, what="bump")
            proxy.resume()
        assert calls == 1
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert caught.value.metadata["commit_outcome"] == "unknown"
    direct = await asyncpg.connect(database_dsn)
    try:  # here the COMMIT never reached the server: nothing was applied
        assert await direct.fetchval("SELECT sum(n) FROM counters") == 0
    finally:
        await direct.close()


async def test_a_transaction_against_a_database_that_refuses_connections_fails_once(
    database_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No connection can be made: UNAVAILABLE, the body never runs and is not tried again."""
    database = database_dsn.rsplit("/", 1)[-1].split("?")[0]
    caplog.set_level(logging.INFO, logger="mediagrid.db")
    async with (
        TcpProxy.for_dsn(database_dsn) as proxy,
        _pool(proxy.dsn(database), db_pool_min_size=0) as pool,
    ):
        await pool.fetchval("SELECT 1")
        await proxy.refuse()
        await proxy.close_connections()
        await asyncio.sleep(0.2)  # the pool sees its connection closed: it must make a new one
        calls = 0

        async def body(conn: db.PooledConnection) -> None:
            nonlocal calls
            calls += 1

        with pytest.raises(Unavailable) as caught:
            await pool.transaction(body, what="refused")
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert calls == 0
    assert not [r for r in caplog.records if "refused attempt" in r.getMessage()]


# --- real services ---------------------------------------------------------------------------


async def _admin_token(ctx: Any) -> str:
    repository = UserRepository(ctx.pool)
    admin = await repository.create_user(
        email="admin@example.com", display_name="admin", role="admin", password_hash=None
    )
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    token, _ = await sessions.open_session(admin.id)
    return token


async def test_get_job_and_get_user_succeed_after_their_connections_were_killed(
    suite: Any, pg_admin_dsn: str
) -> None:
    """pg_terminate_backend of the suite's pooled connections, 5 rounds: every GetJob and
    GetUser right after a kill is OK (retried on a fresh connection), and so is a CreateJob
    with a request_id (safe to run twice); one without is OK or UNAVAILABLE, never INTERNAL,
    and never creates two jobs."""
    _server, ctx, channel = await suite(
        "users", "jobs", job_types=TEST_JOB_TYPES, auth_cache_ttl_seconds=0
    )
    md = bearer(await _admin_token(ctx))
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    users = users_grpc.UserServiceStub(channel)
    created = await jobs.CreateJob(
        job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="test.noop")), metadata=md
    )
    database = ctx.settings.database_dsn().rsplit("/", 1)[-1].split("?")[0]
    admin = await asyncpg.connect(pg_admin_dsn)
    creates: list[str] = []
    try:
        for round_ in range(5):
            killed = await _kill(
                admin,
                "datname = $1 AND application_name = $2",
                database,
                ctx.settings.service_name,
            )
            assert killed >= 1
            got = await jobs.GetJob(
                job_service_pb2.GetJobRequest(name=created.job.name), metadata=md, timeout=10
            )
            assert got.job.name == created.job.name
            me = await users.GetUser(users_pb.GetUserRequest(name="users/me"), metadata=md)
            assert me.user.email == "admin@example.com"
            for request_id in (f"r{round_}", ""):
                await _kill(
                    admin,
                    "datname = $1 AND application_name = $2",
                    database,
                    ctx.settings.service_name,
                )
                spec = job_pb2.JobSpec(type="test.noop", request_id=request_id)
                try:
                    await jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(job=spec), metadata=md, timeout=10
                    )
                    creates.append("OK")
                except grpc.aio.AioRpcError as exc:
                    assert not request_id, exc
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    creates.append("UNAVAILABLE")
        listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=100), metadata=md)
    finally:
        await admin.close()
    print(f"CreateJob after a kill (with, without a request_id): {creates}")
    assert len(listed.jobs) == 1 + creates.count("OK")  # no job created twice


async def test_a_blackholed_database_is_unavailable_within_the_bound_and_recovers(
    suite: Any, database_dsn: str
) -> None:
    """PostgreSQL stops answering (proxy paused): GetJob with a 10 s deadline answers
    UNAVAILABLE DATABASE_UNAVAILABLE after the 1 s bound, never DEADLINE_EXCEEDED; the breaker
    opens (then calls fail at once, saying so); after the proxy resumes the service recovers
    without a restart."""
    from tests.jobs.jobs_support import PRINCIPALS
    from tests.support.auth import StaticAuthenticator

    database = database_dsn.rsplit("/", 1)[-1].split("?")[0]
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        _server, ctx, channel = await suite(
            "jobs",
            authenticator=StaticAuthenticator(PRINCIPALS),
            job_types=TEST_JOB_TYPES,
            database_url=SecretStr(with_database(proxy.dsn(), database)),
            db_call_timeout_seconds=1.0,
            breaker_min_calls=3,
            # Short, so that the successes of the set-up leave the window during the outage.
            breaker_window_seconds=2.0,
            breaker_open_seconds=2.0,
        )
        # The services' pool and the process's database dependency (health) are one.
        assert ctx.pool.dependency is ctx.dependencies.database
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        md = bearer("admin-token")
        created = await jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="test.noop")), metadata=md
        )
        request = job_service_pb2.GetJobRequest(name=created.job.name)

        proxy.pause()
        seen: list[tuple[str, float]] = []
        for _ in range(12):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await jobs.GetJob(request, metadata=md, timeout=10)
            elapsed = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert elapsed < 6  # the 1 s bound plus a generous margin, far from the 10 s
            info = error_info(caught.value)
            assert info is not None and info.reason == "DATABASE_UNAVAILABLE"
            assert info.metadata["dependency"] == "postgresql"
            assert retry_info(caught.value) is not None
            seen.append((info.metadata.get("circuit", "-"), round(elapsed, 2)))
            if info.metadata.get("circuit") == "open":
                break
        print(f"during the outage (circuit, seconds): {seen}")
        assert seen[-1][0] == "open"
        assert not await db.check_health(ctx.pool)

        proxy.resume()
        recovered = None
        for _ in range(300):
            try:
                recovered = await jobs.GetJob(request, metadata=md, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                await asyncio.sleep(0.1)
        assert recovered is not None and recovered.job.name == created.job.name
        assert ctx.dependencies.database.breaker.state == "closed"
        assert await db.check_health(ctx.pool)
