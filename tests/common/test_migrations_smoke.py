"""The template-database fixture works and migrations are idempotent."""

from pathlib import Path

import asyncpg

from common.migrations import migrate


async def test_migrate_twice_is_a_noop(pool: asyncpg.Pool, tmp_path: Path) -> None:
    (tmp_path / "001_init.sql").write_text("CREATE TABLE demo.things (id int PRIMARY KEY);")
    (tmp_path / "002_more.sql").write_text("ALTER TABLE demo.things ADD COLUMN label text;")
    async with pool.acquire() as conn:
        assert await migrate(conn, "demo", tmp_path) == [1, 2]
        assert await migrate(conn, "demo", tmp_path) == []
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema='demo' AND table_name='things' ORDER BY 1"
        )
    assert [c["column_name"] for c in columns] == ["id", "label"]
