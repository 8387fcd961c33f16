"""The jobs schema's migrations on a database that already holds jobs."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from common.migrations import migrate
from services.jobs.repository import Q
from tests.support.hypo import relaxed

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "jobs" / "sql" / "migrations"


async def test_job_keys_migration_backfills_existing_jobs(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A schema as it was before 003: two jobs (one in a batch) created under it.
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("00[12]_*.sql")):
        shutil.copy(path, before / path.name)
    batch, in_batch, alone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute("DROP SCHEMA jobs CASCADE")
        assert await migrate(conn, "jobs", before) == [1, 2]
        await conn.execute(
            "INSERT INTO jobs.batches (id, owner, total_jobs) VALUES ($1, 'users/a', 1)", batch
        )
        await conn.execute(
            "INSERT INTO jobs.jobs (id, type, owner, state, batch_id, max_attempts) VALUES "
            "($1, 't', 'users/a', 'queued', $2, 1), ($3, 't', 'users/b', 'queued', NULL, 1)",
            in_batch,
            batch,
            alone,
        )

        assert 3 in await migrate(conn, "jobs", MIGRATIONS)

        keys = await conn.fetch("SELECT id, owner, batch_id FROM jobs.job_keys ORDER BY owner")
        assert [tuple(k) for k in keys] == [(in_batch, "users/a", batch), (alone, "users/b", None)]
        # Lookups go through the keys: the batch's job and each owner's job are found.
        assert [r["id"] for r in await conn.fetch(Q.batch_job_names, batch)] == [in_batch]
        listed = await conn.fetch(
            Q.list_jobs_by_owner, "users/b", None, None, None, None, None, None, None, 10
        )
        assert [r["id"] for r in listed] == [alone]
        # The batch is not empty while its job exists; once the job is gone it is purged.
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert await conn.execute(Q.purge_empty_batches, tomorrow, 10) == "DELETE 0"
        assert await conn.fetchval(Q.delete_owner_chunk, "users/a", 10) == 1
        assert await conn.fetchval("SELECT count(*) FROM jobs.job_keys") == 1
        assert await conn.execute(Q.purge_empty_batches, tomorrow, 10) == "DELETE 1"


async def test_job_keys_follow_every_insert_and_delete_of_jobs(pool: asyncpg.Pool) -> None:
    # Not through the repository: any statement that adds or removes jobs keeps the keys.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO jobs.jobs (id, type, owner, state, max_attempts) "
            "SELECT gen_random_uuid(), 't', 'users/k' || (g % 3), 'queued', 1 "
            "FROM generate_series(1, 30) g"
        )
        keys = await conn.fetch(
            "SELECT k.owner, j.owner AS job_owner, k.created_at = j.created_at AS same_time "
            "FROM jobs.job_keys k JOIN jobs.jobs j USING (id)"
        )
        assert len(keys) == 30
        assert all(k["owner"] == k["job_owner"] and k["same_time"] for k in keys)
        await conn.execute("UPDATE jobs.jobs SET priority = 5 WHERE owner = 'users/k1'")
        await conn.execute("DELETE FROM jobs.jobs WHERE owner = 'users/k1'")
        left = await conn.fetch("SELECT DISTINCT owner FROM jobs.job_keys ORDER BY owner")
        assert [r["owner"] for r in left] == ["users/k0", "users/k2"]
        assert await conn.fetchval("SELECT count(*) FROM jobs.job_keys") == 20


@given(
    items=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=100),
        max_size=400,
    )
)
@relaxed(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_notify_list_sends_every_item_within_the_payload_limit(
    pool: asyncpg.Pool, items: list[str]
) -> None:
    received: list[str] = []

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.append(payload)

    async with pool.acquire() as listener, pool.acquire() as sender:
        await listener.add_listener("mg_test_list", on_notify)
        try:
            sent = await sender.fetchval(
                "SELECT jobs.notify_list('mg_test_list', $1::text[])", items
            )
            for _ in range(200):  # notifications arrive asynchronously
                if len(received) == sent:
                    break
                await asyncio.sleep(0.01)
        finally:
            await listener.remove_listener("mg_test_list", on_notify)
    assert len(received) == sent
    assert all(len(payload.encode()) < 8000 for payload in received)
    assert [item for payload in received for item in payload.split(",")] == items
