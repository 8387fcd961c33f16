"""The asyncpg pool: connect with retry, per-connection settings and codecs, health, close.

Also the named-query loader: each service keeps its SQL in ``sql/queries.sql`` as blocks
headed ``-- name: <query_name>`` and loads them once at import.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import asyncpg

from common.errors import Unavailable
from common.resilience import retry_async
from common.settings import Settings

log = logging.getLogger("mediagrid.db")

# Errors worth retrying while connecting: the server is starting, restarting or unreachable.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    TimeoutError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


def server_settings(settings: Settings) -> dict[str, str]:
    return {
        "application_name": settings.service_name,
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
    }


async def create_pool(settings: Settings, dsn: str | None = None) -> asyncpg.Pool:
    """Open the pool, retrying with exponential backoff and full jitter while the server is away."""
    target = dsn or settings.database_dsn()

    async def connect() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            target,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_connect_timeout_seconds,
            server_settings=server_settings(settings),
            init=_init_connection,
        )
        assert pool is not None
        return pool

    try:
        return await retry_async(
            connect,
            attempts=settings.db_connect_attempts,
            base_delay=settings.db_connect_backoff_seconds,
            retry_on=CONNECT_ERRORS,
            what="connecting to PostgreSQL",
        )
    except CONNECT_ERRORS as exc:
        raise Unavailable(
            f"PostgreSQL is unreachable after {settings.db_connect_attempts} attempts: {exc}",
            reason="DATABASE_UNAVAILABLE",
        ) from exc


async def check_health(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    """True when a connection can run a trivial query within ``timeout`` seconds."""
    try:
        async with pool.acquire(timeout=timeout) as conn:
            return bool(await conn.fetchval("SELECT 1", timeout=timeout) == 1)
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log
        log.warning("database health check failed: %s", exc)
        return False


_QUERY_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, str]:
    """Parse ``-- name: foo`` blocks of a .sql file into {name: sql}."""
    text = path.read_text()
    queries: dict[str, str] = {}
    matches = list(_QUERY_HEADER.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in queries:
            raise ValueError(f"{path}: query {name!r} is defined twice")
        queries[name] = body
    return queries


class Queries:
    """Attribute access to the named queries of one file: ``Q.get_user``."""

    def __init__(self, path: Path) -> None:
        self._queries = load_queries(path)
        self._path = path

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"{self._path} has no query {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._queries)
