"""The users migrations: applied in the template, idempotent, with the declared tables."""

from __future__ import annotations

import asyncpg

from common.migrations import migrate
from common.registry import SERVICES
from services.users.repository import Q

TABLES = {
    "users",
    "sessions",
    "grants",
    "activity",
    "login_throttle",
    "throttle_key",
    "pending_purges",
    "api_keys",
    "schema_migrations",
    # Progress tables of `mediagrid legacy import-redis` (services/migration, migration 200).
    "legacy_user_map",
    "legacy_rejects",
    "legacy_checkpoints",
}


async def test_migrations_are_idempotent_and_declare_the_tables(pool: asyncpg.Pool) -> None:
    spec = SERVICES["users"]
    async with pool.acquire() as conn:
        assert await migrate(conn, spec.schema, spec.migrations) == []
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'users'"
        )
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'users'")
    assert {r["table_name"] for r in rows} == TABLES
    assert "users_email_key" in {r["indexname"] for r in indexes}


async def test_every_named_query_is_valid_sql(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for name in Q.names():
            await conn.prepare(getattr(Q, name))  # parses and plans without running
