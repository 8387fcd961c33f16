"""The migration runner against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest

from common.migrations import MigrationError, discover, migrate, pending


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


BASIC = {
    "001_init.sql": "CREATE TABLE demo.things (id int PRIMARY KEY);",
    "002_more.sql": "ALTER TABLE demo.things ADD COLUMN label text;",
}


async def recorded(conn: asyncpg.Connection, schema: str = "demo") -> list[tuple[int, str]]:
    rows = await conn.fetch(f"SELECT version, name FROM {schema}.schema_migrations ORDER BY 1")
    return [(r["version"], r["name"]) for r in rows]


async def test_apply_twice_is_a_noop(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", BASIC)
    async with pool.acquire() as conn:
        assert await pending(conn, "demo", directory) == [1, 2]
        assert await migrate(conn, "demo", directory) == [1, 2]
        assert await migrate(conn, "demo", directory) == []
        assert await pending(conn, "demo", directory) == []
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema='demo' AND table_name='things' ORDER BY 1"
        )
        assert [c["column_name"] for c in columns] == ["id", "label"]
        assert await recorded(conn) == [(1, "init"), (2, "more")]
        # A new file later is applied on its own.
        write(directory, {"003_index.sql": "CREATE INDEX things_label ON demo.things (label);"})
        assert await pending(conn, "demo", directory) == [3]
        assert await migrate(conn, "demo", directory) == [3]


async def test_concurrent_runners_apply_each_migration_once(
    database_dsn: str, tmp_path: Path
) -> None:
    directory = write(
        tmp_path / "m",
        {
            # The sleep keeps the first runner inside the lock while the second one arrives.
            "001_init.sql": "SELECT pg_sleep(0.3); CREATE TABLE demo.counter (n int);",
            "002_seed.sql": "INSERT INTO demo.counter VALUES (1);",
            "003_more.sql": "INSERT INTO demo.counter VALUES (2);",
        },
    )
    # A short statement_timeout (as on pool connections) must not break the lock wait.
    conns = [
        await asyncpg.connect(database_dsn, server_settings={"statement_timeout": "100"})
        for _ in range(3)
    ]
    try:
        results = await asyncio.gather(*(migrate(c, "demo", directory) for c in conns))
        applied = sorted(v for result in results for v in result)
        assert applied == [1, 2, 3]  # each exactly once across the runners
        assert sorted(results, key=len)[:2] == [[], []]
        assert await conns[0].fetchval("SELECT count(*) FROM demo.counter") == 2
        assert await recorded(conns[1]) == [(1, "init"), (2, "seed"), (3, "more")]
        for conn in conns:  # the session setting is restored afterwards
            assert await conn.fetchval("SHOW statement_timeout") == "100ms"
        # pg_locks covers the whole server (other tests migrate other databases): this one only.
        locks = await conns[0].fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert locks == 0
    finally:
        for conn in conns:
            await conn.close()


async def test_edited_applied_migration_is_an_error(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", BASIC)
    async with pool.acquire() as conn:
        await migrate(conn, "demo", directory)
        (directory / "001_init.sql").write_text("CREATE TABLE demo.things (id bigint PRIMARY KEY);")
        write(directory, {"003_new.sql": "CREATE TABLE demo.other (id int);"})
        with pytest.raises(MigrationError, match="001_init was edited after it was applied"):
            await migrate(conn, "demo", directory)
        # Checked before anything runs: the new migration was not applied either.
        assert await recorded(conn) == [(1, "init"), (2, "more")]


@pytest.mark.parametrize(
    "name", ["1_init.sql", "001-init.sql", "001_Init.sql", "init.sql", "001_.sql", "0001_a b.sql"]
)
def test_bad_file_names_are_rejected(tmp_path: Path, name: str) -> None:
    directory = write(tmp_path / "m", {"001_ok.sql": "SELECT 1;", name: "SELECT 2;"})
    with pytest.raises(MigrationError, match=r"NNN_lower_snake\.sql"):
        discover(directory)


def test_duplicate_versions_are_rejected(tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match="share a version"):
        discover(directory)


def test_versions_sort_numerically(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m", {"1000_late.sql": "SELECT 3;", "100_mid.sql": "SELECT 2;", "099_a.sql": ""}
    )
    assert [m.version for m in discover(directory)] == [99, 100, 1000]
    assert (tmp_path / "m" / "README.md").exists() is False  # non-.sql files are ignored
    (tmp_path / "m" / "README.md").write_text("notes")
    assert len(discover(directory)) == 3


async def test_failing_migration_rolls_back_alone(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m",
        {
            "001_init.sql": "CREATE TABLE demo.things (id int PRIMARY KEY);",
            "002_broken.sql": "CREATE TABLE demo.half (id int); INSERT INTO demo.nope VALUES (1);",
            "003_after.sql": "CREATE TABLE demo.after (id int);",
        },
    )
    async with pool.acquire() as conn:
        with pytest.raises(MigrationError, match=r"demo migration 002_broken failed: .*nope"):
            await migrate(conn, "demo", directory)
        assert await recorded(conn) == [(1, "init")]
        assert await conn.fetchval("SELECT to_regclass('demo.things')") is not None
        assert await conn.fetchval("SELECT to_regclass('demo.half')") is None  # rolled back
        assert await conn.fetchval("SELECT to_regclass('demo.after')") is None  # never ran
        assert await pending(conn, "demo", directory) == [2, 3]
        # The lock was released and the connection is usable: fix the file and go on.
        (directory / "002_broken.sql").write_text("CREATE TABLE demo.half (id int);")
        assert await migrate(conn, "demo", directory) == [2, 3]


async def test_migration_numbered_below_the_applied_ones_is_applied_with_a_warning(
    pool: asyncpg.Pool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ranges per part of a service (files 001-099, videos 100-): 002 may come after 100."""
    directory = write(tmp_path / "m", {"001_a.sql": "SELECT 1;", "100_videos.sql": "SELECT 3;"})
    async with pool.acquire() as conn:
        assert await migrate(conn, "demo", directory) == [1, 100]
        write(directory, {"002_b.sql": "CREATE TABLE demo.b (id int);"})
        assert await pending(conn, "demo", directory) == [2]
        with caplog.at_level(logging.WARNING, logger="mediagrid.migrations"):
            assert await migrate(conn, "demo", directory) == [2]
        assert "002_b are numbered below the applied 100" in caplog.text
        assert await recorded(conn) == [(1, "a"), (2, "b"), (100, "videos")]


async def test_schemas_are_independent_and_validated(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"001_init.sql": "CREATE TABLE t (id int);"})
    async with pool.acquire() as conn:
        # Unqualified names land in the service's schema (search_path is set per migration).
        assert await migrate(conn, "alpha", directory) == [1]
        assert await migrate(conn, "beta", directory) == [1]
        assert await conn.fetchval("SELECT to_regclass('alpha.t')") is not None
        assert await conn.fetchval("SELECT to_regclass('beta.t')") is not None
        for bad in ("Alpha", "a;drop", "1abc", ""):
            with pytest.raises(MigrationError, match="invalid schema name"):
                await migrate(conn, bad, directory)
            with pytest.raises(MigrationError, match="invalid schema name"):
                await pending(conn, bad, directory)
