"""import-redis: legacy users and jobs from a real Redis (own key prefix) into PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from argon2 import PasswordHasher, Type

from common.settings import Settings
from services.jobs.models import ListFilter
from services.jobs.repository import JobRepository
from services.jobs.states import JobState
from services.migration.redis_import import RedisImporter, source_name
from services.migration.repository import LegacyRepository
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.legacy.conftest import Redis

OLD_ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.I)


def importer(settings: Settings, pool: asyncpg.Pool, r: Redis, **options: Any) -> RedisImporter:
    client, prefix = r
    where = client.connection_pool.connection_kwargs
    return RedisImporter(
        settings=settings,
        redis=client,
        url=f"redis://{where['host']}:{where['port']}/{where['db']}",
        prefix=prefix,
        users=UserRepository(pool),
        jobs=JobRepository(pool),
        legacy=LegacyRepository(pool),
        **options,
    )


async def seed(r: Redis) -> None:
    client, p = r
    await client.hset(
        f"{p}user:u1",
        mapping={
            "email": "Alice@Example.com",
            "name": "Alice",
            "password_hash": OLD_ARGON2.hash("correct horse battery"),
            "role": "admin",
            "created_at": "1600000000",
        },
    )
    await client.hset(
        f"{p}user:u2",
        mapping={
            "email": "bob@example.com",
            "name": "Bob",
            "password_hash": "$2b$12$abcdefghijklmnopqrstuuQ1w9yHq9lU6m7eVOT0c2b8qgFmd6hS",
            "role": "member",
            "created_at": "2020-05-01T10:00:00Z",
            "disabled": "1",
        },
    )
    await client.hset(f"{p}user:u3", mapping={"email": "not-an-email", "created_at": "1"})
    await client.hset(f"{p}user:u4", mapping={"email": "CAROL@example.com", "created_at": "2"})
    await client.sadd(f"{p}users", "u1", "u2", "u3", "u4")
    jobs = {
        "j1": {
            "type": "video.probe",
            "payload": json.dumps({"file": "x"}),
            "owner": "u1",
            "state": "queued",
            "attempts": "0",
            "created_at": "1600000100",
        },
        "j2": {
            "type": "video.thumbnail",
            "payload": "{}",
            "owner": "u2",
            "state": "running",
            "attempts": "2",
            "max_attempts": "5",
            "created_at": "1600000200",
        },
        "j3": {
            "type": "email.send",
            "payload": "{}",
            "owner": "u1",
            "state": "done",
            "created_at": "1600000300",
        },
        "j4": {
            "type": "email.send",
            "payload": "{}",
            "owner": "u1",
            "state": "cancelled",
            "created_at": "1600000400",
        },
        "j5": {
            "type": "Bad Type",
            "payload": "[1]",
            "owner": "u1",
            "state": "queued",
            "created_at": "x",
        },
        "j6": {
            "type": "email.send",
            "payload": "{}",
            "owner": "u3",
            "state": "queued",
            "created_at": "1600000500",
        },
    }
    for job_id, fields in jobs.items():
        await client.hset(f"{p}job:{job_id}", mapping=fields)
    await client.rpush(f"{p}queue:video.probe", "j1")


async def test_import_users_and_jobs_with_rejects(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    await seed(redis_prefix)
    await UserRepository(pool).create_user(
        email="carol@example.com", display_name="", role="user", password_hash=None
    )
    report = await importer(settings, pool, redis_prefix).run()
    assert (report.counts["users"].imported, report.counts["users"].rejected) == (2, 2)
    assert (report.counts["jobs"].imported, report.counts["jobs"].rejected) == (3, 3)
    p = redis_prefix[1]
    rejects = {r.key: (r.kind, r.reason) for r in report.rejects}
    assert rejects == {
        f"{p}user:u3": ("invalid", "INVALID_USER"),
        f"{p}user:u4": ("conflict", "EMAIL_TAKEN"),
        f"{p}job:j3": ("skipped", "FINISHED_JOB_NOT_MIGRATED"),
        f"{p}job:j5": ("invalid", "INVALID_JOB"),
        f"{p}job:j6": ("invalid", "UNKNOWN_OWNER"),
    }
    legacy = LegacyRepository(pool)
    stored = {r.key: r.reason for r in await legacy.rejects(report.source)}
    assert stored == {k: v[1] for k, v in rejects.items()}

    users = UserRepository(pool)
    ids = await legacy.user_ids_of_legacy(["u1", "u2", "u3"])
    assert set(ids) == {"u1", "u2"}
    alice = await users.get_credentials(ids["u1"])
    assert (alice.user.email, alice.user.role, alice.user.display_name) == (
        "Alice@example.com",
        "admin",
        "Alice",
    )
    assert alice.password_hash is not None and alice.password_hash.startswith("$argon2i$")
    bob = await users.get_credentials(ids["u2"])
    assert bob.password_hash is None and bob.user.status == "disabled" and bob.user.role == "user"
    mappings = await legacy.user_mappings(["u1", "u2"])
    assert not mappings["u1"].needs_password_reset and mappings["u2"].needs_password_reset

    jobs = JobRepository(pool)
    alice_jobs = await jobs.list_jobs(ListFilter(owner=f"users/{ids['u1']}"), None, 100)
    assert sorted((j.type, j.state) for j in alice_jobs) == [
        ("email.send", JobState.CANCELLED),
        ("video.probe", JobState.QUEUED),
    ]
    probe = next(j for j in alice_jobs if j.type == "video.probe")
    assert probe.payload == {"file": "x"} and probe.request_id == "legacy:j1"
    (thumb,) = await jobs.list_jobs(ListFilter(owner=f"users/{ids['u2']}"), None, 100)
    assert thumb.state == JobState.QUEUED and thumb.max_attempts == 3  # 5 minus 2 used
    mapped = await legacy.job_mappings(["j1", "j3"])
    assert mapped["j1"].job_id == probe.id and mapped["j3"].job_id is None
    assert mapped["j1"].legacy_create_time == datetime.fromtimestamp(1600000100, UTC)

    # A second run changes nothing and duplicates nothing.
    again = await importer(settings, pool, redis_prefix).run()
    assert again.counts["users"].imported == 0 and again.counts["jobs"].imported == 0
    assert again.counts["users"].already == 2 and again.counts["jobs"].already == 3
    assert len(await jobs.list_jobs(ListFilter(), None, 100)) == 3


async def test_legacy_argon2_hash_logs_in_and_is_rehashed(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    await seed(redis_prefix)
    await importer(settings, pool, redis_prefix).run()
    users = UserRepository(pool)
    manager = SessionManager(users, settings, Passwords.from_settings(settings))
    _, _, user = await manager.login("alice@example.com", "correct horse battery")
    after = await users.get_credentials(user.id)
    assert after.password_hash is not None and after.password_hash.startswith("$argon2id$")


async def test_resume_after_interruption_imports_the_rest_exactly_once(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    client, p = redis_prefix
    for n in range(40):
        await client.hset(
            f"{p}user:u{n}", mapping={"email": f"u{n}@example.com", "created_at": "1600000000"}
        )
    for n in range(60):
        await client.hset(
            f"{p}job:j{n}",
            mapping={
                "type": "work.item",
                "owner": f"u{n % 40}",
                "state": "queued",
                "created_at": "1",
            },
        )
    stopped = await importer(settings, pool, redis_prefix, batch=7, limit=25).run()
    assert stopped.stopped_early and stopped.records == 25
    assert stopped.counts["users"].imported == 25
    second = await importer(settings, pool, redis_prefix, batch=7, limit=40).run(resume=True)
    assert second.stopped_early
    assert second.counts["users"].imported == 15
    third = await importer(settings, pool, redis_prefix, batch=7).run(resume=True)
    assert not third.stopped_early and third.rejects == []
    jobs = await JobRepository(pool).list_jobs(ListFilter(), None, 1000)
    total_jobs = sum(r.counts["jobs"].imported for r in (stopped, second, third))
    assert total_jobs == 60 and len(jobs) == 60
    assert len({j.request_id for j in jobs}) == 60
    legacy = LegacyRepository(pool)
    assert len(await legacy.user_ids_of_legacy([f"u{n}" for n in range(40)])) == 40
    checkpoint = await legacy.checkpoint(stopped.source, "jobs")
    assert checkpoint is not None and checkpoint.done
    # Resuming a finished import does nothing.
    fourth = await importer(settings, pool, redis_prefix).run(resume=True)
    assert fourth.records == 0


async def test_crash_between_create_and_map_is_adopted_not_duplicated(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    client, p = redis_prefix
    await client.hset(
        f"{p}user:solo",
        mapping={"email": "solo@example.com", "name": "Solo", "created_at": "1600000000"},
    )
    legacy = LegacyRepository(pool)
    users = UserRepository(pool)
    # What a run that died right after create_user leaves behind.
    await legacy.claim_user(
        "solo", "solo@example.com", needs_password_reset=True, legacy_create_time=None
    )
    made = await users.create_user(
        email="solo@example.com", display_name="Solo", role="user", password_hash=None
    )
    report = await importer(settings, pool, redis_prefix).run()
    assert report.counts["users"].imported == 1 and report.rejects == []
    assert await legacy.user_ids_of_legacy(["solo"]) == {"solo": made.id}


async def test_unrelated_existing_user_is_a_conflict(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    client, p = redis_prefix
    users = UserRepository(pool)
    await users.create_user(
        email="taken@example.com", display_name="", role="user", password_hash=None
    )
    await client.hset(
        f"{p}user:t", mapping={"email": "taken@example.com", "created_at": "1600000000"}
    )
    report = await importer(settings, pool, redis_prefix).run()
    assert [(r.kind, r.reason) for r in report.rejects] == [("conflict", "EMAIL_TAKEN")]
    assert await LegacyRepository(pool).user_mappings(["t"]) == {}


def test_source_name_drops_credentials() -> None:
    assert (
        source_name("redis://:secret@old-redis:6380/2", "app:") == "redis://old-redis:6380/2#app:"
    )
    assert source_name("redis://user:pw@h/0", "") == "redis://h/0"


async def test_a_fixed_record_is_imported_and_its_reject_removed(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis
) -> None:
    client, p = redis_prefix
    await client.hset(f"{p}user:x", mapping={"email": "broken", "created_at": "1"})
    first = await importer(settings, pool, redis_prefix).run()
    assert [r.reason for r in first.rejects] == ["INVALID_USER"]
    assert "email" in first.rejects[0].detail
    await client.hset(f"{p}user:x", mapping={"email": "fixed@example.com"})
    second = await importer(settings, pool, redis_prefix).run()
    assert second.counts["users"].imported == 1 and second.rejects == []
    assert await LegacyRepository(pool).rejects(second.source) == []
