"""How the suite picks its stores: the machine's only when really usable, else embedded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis

from tests.support.redis_server import LOCAL_REDIS, embedded_redis, redis_answers
from tests.support.stores import can_administer, run_admin, with_database


@pytest_asyncio.fixture
async def not_postgres() -> AsyncIterator[int]:
    """A port that accepts connections and closes them: something else answers there."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_port_that_answers_is_not_a_usable_postgres(not_postgres: int) -> None:
    assert not await can_administer(f"postgresql://postgres@127.0.0.1:{not_postgres}/postgres")


async def test_a_role_that_may_not_create_databases_is_not_used(pg_admin_dsn: str) -> None:
    assert await can_administer(pg_admin_dsn)
    role = f"mg_probe_{uuid.uuid4().hex[:8]}"
    await run_admin(pg_admin_dsn, f"CREATE ROLE {role} LOGIN NOCREATEDB NOSUPERUSER")
    try:
        head, sep, query = with_database(pg_admin_dsn, "postgres").partition("?")
        scheme, rest = head.split("://", 1)
        as_role = f"{scheme}://{role}@{rest.rpartition('@')[2]}{sep}{query}"
        assert not await can_administer(as_role)
    finally:
        await run_admin(pg_admin_dsn, f"DROP ROLE IF EXISTS {role}")


def test_the_embedded_redis_is_a_real_server_on_its_own_port() -> None:
    with embedded_redis() as url:
        assert url != LOCAL_REDIS and redis_answers(url)
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            client.hset("h", mapping={"a": "1"})
            assert client.hgetall("h") == {"a": "1"}
        finally:
            client.close()
    assert not redis_answers(url, timeout=0.5)  # stopped with the context
