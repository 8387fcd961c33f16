"""The asyncpg pool against a real PostgreSQL: late start, give-up, session settings, codecs,
and the named-query loader.

Outages are simulated with tests/support/proxy.py in front of the server. The same tests run
against the embedded PostgreSQL (pgserver, reached through its unix socket) with
``MEDIAGRID_TEST_EMBEDDED_PG=1 .venv/bin/pytest tests/common -q``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import db
from common.errors import Unavailable
from common.settings import Settings
from tests.support.hypo import relaxed
from tests.support.proxy import TcpProxy, free_port
from tests.support.rpc import test_settings


def _retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "connecting to PostgreSQL" in r.getMessage()]


@pytest.mark.parametrize("min_size", [0, 1])
async def test_pool_waits_for_a_database_that_appears_late(
    pg_admin_dsn: str, caplog: pytest.LogCaptureFixture, min_size: int
) -> None:
    """Nothing listens at first; the pool is created once the proxy starts accepting."""
    proxy = TcpProxy.for_dsn(pg_admin_dsn)
    port = free_port()
    proxy.port = port
    settings = test_settings(
        db_connect_attempts=40, db_connect_backoff_seconds=0.05, db_pool_min_size=min_size
    )

    async def appear_later() -> None:
        await asyncio.sleep(0.8)
        await proxy.start(port)

    caplog.set_level(logging.WARNING, logger="mediagrid.resilience")
    appearing = asyncio.create_task(appear_later())
    try:
        pool = await db.create_pool(settings, proxy.dsn("postgres"))
        try:
            assert appearing.done()  # it cannot have connected before the proxy listened
            assert await pool.fetchval("SELECT 41 + 1") == 42
        finally:
            await pool.close()
    finally:
        await appearing
        await proxy.stop()
    retries = _retries(caplog)
    assert len(retries) >= 1
    assert "Connect" in retries[0].getMessage() or "refused" in retries[0].getMessage().lower()


async def test_pool_retries_a_server_that_resets_connections(
    pg_admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The port answers but drops every connection (a server still starting up)."""
    caplog.set_level(logging.WARNING, logger="mediagrid.resilience")
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        proxy.to_drop = 3
        settings = test_settings(db_connect_attempts=40, db_connect_backoff_seconds=0.02)
        pool = await db.create_pool(settings, proxy.dsn("postgres"))
        assert proxy.to_drop == 0 and proxy.accepted >= 4
        try:
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()
    assert len(_retries(caplog)) >= 3


@pytest.mark.parametrize("min_size", [0, 1])
async def test_pool_gives_up_with_unavailable(
    caplog: pytest.LogCaptureFixture, min_size: int
) -> None:
    caplog.set_level(logging.WARNING, logger="mediagrid.resilience")
    port = free_port()
    settings = test_settings(
        db_connect_attempts=3, db_connect_backoff_seconds=0.01, db_pool_min_size=min_size
    )
    with pytest.raises(Unavailable) as caught:
        await db.create_pool(settings, f"postgresql://postgres:s3cret@127.0.0.1:{port}/appdb")
    error = caught.value
    assert error.reason == "DATABASE_UNAVAILABLE"
    assert f"PostgreSQL at 127.0.0.1:{port}/appdb is unreachable after 3 attempts" in error.message
    assert "s3cret" not in error.message
    assert error.metadata == {"database": f"127.0.0.1:{port}/appdb", "attempts": "3"}
    retries = _retries(caplog)
    assert len(retries) == 2  # three attempts, two waits
    # Exponential backoff with full jitter: wait n is drawn from [0, base * 2**(n-1)].
    for n, record in enumerate(retries, start=1):
        match = re.search(r"attempt (\d)/3.*retrying in ([0-9.]+)s", record.getMessage())
        assert match is not None and int(match.group(1)) == n
        assert 0 <= float(match.group(2)) <= 0.01 * 2 ** (n - 1) + 0.005  # printed rounded


async def test_pool_gives_up_on_a_hanging_server() -> None:
    """Accepts TCP but never answers: each attempt ends at the connect timeout."""
    async with TcpProxy("127.0.0.1", free_port()) as proxy:
        proxy.pause()
        settings = test_settings(
            db_connect_attempts=2, db_connect_backoff_seconds=0.01, db_connect_timeout_seconds=0.3
        )
        with pytest.raises(Unavailable, match="unreachable after 2 attempts: TimeoutError"):
            await db.create_pool(settings, proxy.dsn("postgres"))


async def test_pool_does_not_retry_a_rejection(pg_admin_dsn: str) -> None:
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        settings = test_settings(db_connect_attempts=5, db_connect_backoff_seconds=5)
        with pytest.raises(Unavailable) as caught:
            await asyncio.wait_for(
                db.create_pool(settings, proxy.dsn("mg_no_such_database_here")), 10
            )
    assert caught.value.reason == "DATABASE_REJECTED"
    assert "mg_no_such_database_here" in caught.value.message


async def test_session_settings_are_applied(pg_admin_dsn: str) -> None:
    settings = test_settings(
        db_statement_timeout_ms=250,
        db_idle_in_transaction_timeout_ms=4321,
        service_name="mediagrid-test",
        db_pool_min_size=2,
        db_pool_max_size=3,
    )
    pool = await db.create_pool(settings, pg_admin_dsn)
    try:
        connections = [await pool.acquire() for _ in range(3)]  # every connection, not one
        try:
            for conn in connections:
                assert await conn.fetchval("SHOW statement_timeout") == "250ms"
                assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "4321ms"
                assert await conn.fetchval("SHOW application_name") == "mediagrid-test"
            with pytest.raises(asyncpg.QueryCanceledError):
                await connections[0].execute("SELECT pg_sleep(5)")
        finally:
            for conn in connections:
                await pool.release(conn)
    finally:
        await pool.close()


async def test_release_resets_only_what_needs_resetting(pg_admin_dsn: str) -> None:
    """One connection, reused: an open transaction is always rolled back; session state is
    reset when the holder declared it (advisory lock, session setting) and the common path
    skips the extra reset round trip."""
    pool = await db.create_pool(test_settings(db_pool_min_size=1, db_pool_max_size=1), pg_admin_dsn)

    async def advisory_locks(conn: asyncpg.Connection) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
        )

    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None

            db.declare_session_state(conn)
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("SELECT set_config('work_mem', '7MB', false)")
            assert await advisory_locks(conn) == 1
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await advisory_locks(conn) == 0
            assert await conn.fetchval("SHOW work_mem") != "7MB"

            # Undeclared session state survives the release: the reason to declare it.
            await conn.execute("SELECT set_config('work_mem', '9MB', false)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == "9MB"
            db.declare_session_state(conn)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "9MB"
    finally:
        await pool.close()


VALUES = [
    {},
    {"a": 1, "b": [1, 2, {"c": None}], "d": True, "e": 1.5},
    {"unicode": "ünïcødé ✓ 日本", "quote": 'a "b" \\ c', "nested": {"deep": {"deeper": []}}},
    [1, "two", None],
    "just a string",
    42,
]


async def test_json_and_jsonb_round_trip(pool: asyncpg.Pool) -> None:
    for value in VALUES:
        assert await pool.fetchval("SELECT $1::jsonb", value) == value
        assert await pool.fetchval("SELECT $1::json", value) == value
    # Stored and queried as real JSON, not as a quoted string.
    assert await pool.fetchval("SELECT $1::jsonb ? 'b'", VALUES[1]) is True
    assert await pool.fetchval("SELECT jsonb_typeof($1::jsonb)", VALUES[1]) == "object"
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE docs (body jsonb)")
        await conn.execute("INSERT INTO docs VALUES ($1)", VALUES[2])
        assert await conn.fetchval("SELECT body->'nested'->'deep' FROM docs") == {"deeper": []}


async def test_check_health_on_a_closed_pool(pg_admin_dsn: str) -> None:
    pool = await db.create_pool(test_settings(), pg_admin_dsn)
    assert await db.check_health(pool) is True
    await pool.close()
    assert await db.check_health(pool) is False


# --- named queries -------------------------------------------------------------------------


def test_queries_loader(tmp_path: Path) -> None:
    path = tmp_path / "queries.sql"
    path.write_text(
        "-- Queries of the demo service.\n\n"
        "-- name: get_user\n-- Fetch one user.\nSELECT * FROM demo.users WHERE id = $1;\n\n"
        "-- name: list_users\nSELECT *\nFROM demo.users\nORDER BY id;\n"
    )
    queries = db.Queries(path)
    assert queries.names() == ["get_user", "list_users"]
    assert queries.get_user == "-- Fetch one user.\nSELECT * FROM demo.users WHERE id = $1;"
    assert queries["list_users"] == "SELECT *\nFROM demo.users\nORDER BY id;"
    assert "get_user" in queries and "nope" not in queries
    with pytest.raises(AttributeError, match="no query 'nope'"):
        _ = queries.nope


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "defined twice"),
        ("-- name: getUser\nSELECT 1;\n", "invalid query name 'getUser'"),
        ("-- name: get-user\nSELECT 1;\n", "invalid query name"),
        ("-- name:\nSELECT 1;\n", "invalid query name ''"),
        ("-- name: names\nSELECT 1;\n", "invalid query name 'names'"),
        ("-- name: empty\n-- only a comment\n-- name: b\nSELECT 1;\n", "'empty' has no SQL"),
        ("SELECT 0;\n-- name: a\nSELECT 1;\n", "SQL before the first"),
    ],
)
def test_queries_loader_rejects(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "queries.sql"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as caught:
        db.Queries(path)
    assert str(path) in str(caught.value)


names = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z").filter(lambda n: n not in ("names", "get"))
sql_line = st.from_regex(r"\A(SELECT|UPDATE|INSERT|DELETE|WITH) [a-z0-9_ ,.*$()=']{0,30}\Z")
body = st.lists(sql_line | st.just("-- a comment") | st.just(""), min_size=1, max_size=5).filter(
    lambda lines: any(line and not line.startswith("--") for line in lines)
)


@relaxed(max_examples=60)
@given(blocks=st.dictionaries(names, body, min_size=1, max_size=8), preamble=st.booleans())
def test_query_parser_round_trips_rendered_files(
    blocks: dict[str, list[str]], preamble: bool
) -> None:
    text = "-- header comment\n\n" if preamble else ""
    text += "\n".join(
        f"-- name: {name}\n" + "\n".join(lines) + "\n" for name, lines in blocks.items()
    )
    parsed = db.parse_queries(text)
    assert list(parsed) == list(blocks)
    for name, lines in blocks.items():
        assert parsed[name] == "\n".join(lines).strip()


def test_describe_dsn_hides_the_password() -> None:
    assert db.describe_dsn("postgresql://u:pw@db.example:6432/app") == "db.example:6432/app"
    assert db.describe_dsn("postgresql://postgres:@/app?host=/tmp/pg") == "/tmp/pg:5432/app"


async def test_check_health_counts_a_saturated_pool_as_healthy(pg_admin_dsn: str) -> None:
    """All connections busy with requests is load, not an outage."""
    pool = await db.create_pool(test_settings(db_pool_min_size=1, db_pool_max_size=1), pg_admin_dsn)
    try:
        async with pool.acquire() as busy:
            assert await busy.fetchval("SELECT 1") == 1
            assert await db.check_health(pool, timeout=0.2) is True
        assert await db.check_health(pool) is True
    finally:
        await pool.close()


async def test_check_health_is_false_when_no_connection_can_be_made(pg_admin_dsn: str) -> None:
    """Unlike saturation: free slots, but connecting hangs (min_size 0, server stalled)."""
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        settings = test_settings(db_pool_min_size=0, db_pool_max_size=2)
        pool = await db.create_pool(settings, proxy.dsn())
        try:
            assert await db.check_health(pool) is True
            await proxy.close_connections()
            proxy.pause()
            assert await db.check_health(pool, timeout=0.3) is False
        finally:
            proxy.resume()
            pool.terminate()


async def test_pooled_connections_run_without_jit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW jit") == "off"


@pytest.mark.parametrize(
    ("exc", "failed", "lost", "unsent"),
    [
        # Found dead before anything was written: safe to send again, whatever it was.
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2)"), 1, 1, 1),
        (asyncpg.InterfaceError("cannot perform operation: connection is closed"), 0, 1, 1),
        # Lost in flight: may have been applied.
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"), 1, 1, 0),
        (asyncpg.AdminShutdownError("terminating connection"), 1, 1, 0),
        (ConnectionResetError(), 1, 1, 0),
        # A bound that ran out is not a lost connection (and is never retried).
        (TimeoutError(), 1, 0, 0),
        # The server answered: it works.
        (asyncpg.UniqueViolationError("duplicate key"), 0, 0, 0),
        (asyncpg.InterfaceError("another operation is in progress"), 0, 0, 0),
        # A saturated pool says nothing about the server.
        (db.DatabaseBusy(), 0, 0, 0),
        (Unavailable(reason="DATABASE_UNAVAILABLE"), 1, 0, 0),
    ],
)
def test_failure_classes(exc: BaseException, failed: int, lost: int, unsent: int) -> None:
    assert (db.connection_failed(exc), db.connection_lost(exc), db.never_sent(exc)) == (
        bool(failed),
        bool(lost),
        bool(unsent),
    )


async def test_a_plain_pool_given_to_a_repository_gets_the_suite_path(pool: asyncpg.Pool) -> None:
    """Tools and tests hand repositories a plain asyncpg pool: it is wrapped, with a breaker of
    its own and the default bound."""
    from services.jobs.repository import JobRepository

    repo = JobRepository(pool)
    assert isinstance(repo.pool, db.SuitePool) and repo.pool.raw is pool
    assert repo.pool.dependency.timeout == Settings().db_call_timeout_seconds
    assert db.as_suite_pool(repo.pool) is repo.pool
    assert await repo.pool.fetchval("SELECT 1", idempotent=True) == 1
    assert repo.pool.dependency.breaker.counts() == (1, 0)


async def test_background_statements_are_capped_by_the_servers_statement_timeout(
    pool: asyncpg.Pool,
) -> None:
    """Retention and sweeps pass ``long_cap``: the server ends such a statement at its
    statement_timeout anyway, so the client bound only catches a dead network."""
    settings = test_settings(db_call_timeout_seconds=1.0, db_statement_timeout_ms=30_000)
    assert db.SuitePool(pool, settings).long_cap == 30.0
    no_server_limit = test_settings(db_call_timeout_seconds=2.0, db_statement_timeout_ms=0)
    assert db.SuitePool(pool, no_server_limit).long_cap == 2.0
