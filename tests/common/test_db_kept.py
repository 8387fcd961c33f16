"""SuitePool with ``keep_connections`` (the suite runtime's pool) against a real PostgreSQL:
single statements keep their connection checked out for the next one, and that never
starves a transaction or a held connection, never keeps a transaction open, survives a
killed backend and does not hold up closing the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from common import db
from tests.support.rpc import test_settings


@contextlib.asynccontextmanager
async def _kept_pool(dsn: str, **overrides: Any) -> AsyncIterator[db.SuitePool]:
    overrides.setdefault("service_name", f"dbkept-{uuid.uuid4().hex[:8]}")
    settings = test_settings(**overrides)
    pool = db.SuitePool(await db.create_pool(settings, dsn), settings, keep_connections=True)
    try:
        yield pool
    finally:
        await pool.close()


async def test_single_statements_reuse_a_kept_connection(database_dsn: str) -> None:
    async with _kept_pool(database_dsn, db_pool_min_size=0, db_pool_max_size=4) as pool:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        assert [await pool.fetchval("SELECT pg_backend_pid()") for _ in range(5)] == [first] * 5
        # Kept, so the pool sees it in use; nothing else was opened for the statements.
        assert pool.get_size() == 1 and pool.get_idle_size() == 0


async def test_a_transaction_and_a_held_connection_take_the_kept_connection(
    database_dsn: str,
) -> None:
    async with _kept_pool(database_dsn, db_pool_min_size=0, db_pool_max_size=1) as pool:
        await pool.execute("CREATE TABLE t (n int)")  # keeps the pool's only connection

        async def body(conn: db.PooledConnection) -> int:
            await conn.execute("INSERT INTO t VALUES (1)")
            return int(await conn.fetchval("SELECT count(*) FROM t"))

        assert await pool.transaction(body, cap=5.0) == 1
        async with pool.acquire(cap=5.0) as conn:
            assert await conn.fetchval("SELECT count(*) FROM t") == 1
        assert await pool.fetchval("SELECT count(*) FROM t") == 1


async def test_a_statement_hands_its_connection_back_while_a_transaction_waits(
    database_dsn: str,
) -> None:
    async with _kept_pool(database_dsn, db_pool_min_size=0, db_pool_max_size=1) as pool:
        slow = asyncio.create_task(pool.fetchval("SELECT pg_sleep(0.3)"))
        for _ in range(1000):  # until the statement holds the only connection
            if pool.get_size() == 1 and pool.get_idle_size() == 0:
                break
            await asyncio.sleep(0.01)

        async def body(conn: db.PooledConnection) -> int:
            return int(await conn.fetchval("SELECT 7"))

        # Waits for the only connection: the statement must give it back, not keep it.
        assert await pool.transaction(body, cap=10.0) == 7
        await slow


async def test_a_connection_left_inside_a_transaction_is_not_kept(
    database_dsn: str, pg_admin_dsn: str
) -> None:
    name = f"dbkept-{uuid.uuid4().hex[:8]}"
    async with _kept_pool(
        database_dsn, service_name=name, db_pool_min_size=0, db_pool_max_size=1
    ) as pool:
        await pool.execute("BEGIN")
        # Not kept: released through asyncpg, which rolled the transaction back.
        assert pool.get_idle_size() == 1
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            states = await admin.fetch(
                "SELECT state FROM pg_stat_activity WHERE application_name = $1", name
            )
        finally:
            await admin.close()
        assert [row["state"] for row in states] == ["idle"]


async def test_a_kept_connection_killed_meanwhile_is_replaced(
    database_dsn: str, pg_admin_dsn: str
) -> None:
    async with _kept_pool(database_dsn, db_pool_min_size=0, db_pool_max_size=2) as pool:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # A read may run again on a fresh connection whether or not the death was seen yet.
        other = await pool.fetchval("SELECT pg_backend_pid()", idempotent=True)
        assert other != pid


async def test_closing_hands_kept_connections_back_first(database_dsn: str) -> None:
    settings = test_settings(service_name=f"dbkept-{uuid.uuid4().hex[:8]}")
    pool = db.SuitePool(
        await db.create_pool(settings, database_dsn), settings, keep_connections=True
    )
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(3)))
    assert pool.get_idle_size() == 0  # all kept
    # asyncpg's close waits for every checked-out connection: it returns only if they came back.
    await asyncio.wait_for(pool.close(), timeout=30)
    assert pool.raw.is_closing()
