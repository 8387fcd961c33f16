"""The asyncpg pool: connect with retry, per-connection settings and codecs, health, close.

Also the named-query loader: each service keeps its SQL in ``sql/queries.sql`` as blocks
headed ``-- name: <query_name>`` and loads them once at import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from common.errors import Unavailable
from common.resilience import retry_async
from common.settings import Settings

log = logging.getLogger("mediagrid.db")

# Errors worth retrying while connecting: the server is starting, restarting, overloaded or
# unreachable. Anything else (bad password, unknown database) will not heal by waiting.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, incl. "connection does not exist"
    asyncpg.CannotConnectNowError,  # 57P03: the server is starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)

# A connection that failed under a statement: the server went away, the backend was
# terminated, or the protocol was left mid-way ("cannot switch to state ...").
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    *CONNECT_ERRORS,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InternalClientError,
    ConnectionError,
)


def connection_failed(exc: BaseException) -> bool:
    """True for failures that say the database (not the statement) is in trouble.

    A constraint violation or a bad query proves the server answers: the breaker counts it
    as a success.
    """
    if isinstance(exc, Unavailable):
        return True
    return isinstance(exc, CONNECTION_LOST)


class SuiteConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """A pool connection that knows whether its session carries state past a transaction.

    asyncpg's default release runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one extra round trip per checkout, which measured as the
    largest single cost of a one-query RPC (bench_users). The suite's code keeps session
    state (advisory locks, ``set_config(..., false)``) in exactly two places, migrations and
    the users sweep, and they declare it with ``declare_session_state``; only those
    connections pay for the full reset. Open transactions are still rolled back and
    listeners dropped on every release (asyncpg does that before calling our reset).
    """

    __slots__ = ("_holds_session_state",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_session_state = False

    def declare_session_state(self) -> None:
        self._holds_session_state = True


def declare_session_state(conn: asyncpg.Connection | Any) -> None:
    """Mark ``conn`` as holding session state, so that its release resets the session.

    Call it before taking an advisory lock, setting a session variable, LISTENing or opening
    a cursor outside a transaction on a pooled connection. Harmless on a connection that is
    not from a suite pool (tests and tools pass plain connections).
    """
    declare = getattr(conn, "declare_session_state", None)
    if declare is not None:
        declare()


async def _reset_on_release(conn: asyncpg.Connection) -> None:
    if isinstance(conn, SuiteConnection) and conn._holds_session_state:
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)
        conn._holds_session_state = False


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
        # Our statements are short and planned per call: once a deep queue pushes the fair
        # claim's estimated cost past jit_above_cost, compiling it costs far more than running
        # it, on every claim.
        "jit": "off",
    }


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never the password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        port = parts.port or 5432
    except ValueError:
        return "(unparsable database URL)"
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}:{port}/{database}"


async def create_pool(settings: Settings, dsn: str | None = None) -> asyncpg.Pool:
    """Open the pool, retrying with exponential backoff and full jitter while the server is away.

    Every attempt ends with a round trip (``SELECT 1``), so a pool with ``min_size=0`` also
    proves the server answers. Raises ``Unavailable`` (reason DATABASE_UNAVAILABLE) after
    ``db_connect_attempts`` failed attempts, and at once (reason DATABASE_REJECTED) when the
    server answers with an error that waiting will not fix (authentication, unknown database).
    """
    target = dsn or settings.database_dsn()
    where = describe_dsn(target)

    async def connect() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            target,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_connect_timeout_seconds,
            server_settings=server_settings(settings),
            init=_init_connection,
            connection_class=SuiteConnection,
            reset=_reset_on_release,
        )
        assert pool is not None
        try:
            timeout = settings.db_connect_timeout_seconds
            async with pool.acquire(timeout=timeout) as conn:
                await conn.fetchval("SELECT 1", timeout=timeout)
        except BaseException:
            pool.terminate()
            raise
        return pool

    try:
        return await retry_async(
            connect,
            attempts=settings.db_connect_attempts,
            base_delay=settings.db_connect_backoff_seconds,
            retry_on=CONNECT_ERRORS,
            what=f"connecting to PostgreSQL at {where}",
        )
    except CONNECT_ERRORS as exc:
        raise Unavailable(
            f"PostgreSQL at {where} is unreachable after {settings.db_connect_attempts} "
            f"attempts: {type(exc).__name__}: {exc}",
            reason="DATABASE_UNAVAILABLE",
            metadata={"database": where, "attempts": settings.db_connect_attempts},
        ) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(
            f"PostgreSQL at {where} refused the connection: {type(exc).__name__}: {exc}",
            reason="DATABASE_REJECTED",
            metadata={"database": where},
        ) from exc


async def check_health(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """True when a connection can run a trivial query within ``timeout`` seconds.

    Never hangs: a connection whose query timed out is terminated, not handed back to the
    pool as is (asyncpg's release would wait, shielded and without a limit, for the hung
    query to be reset). A pool whose connections are all busy counts as healthy.
    """
    try:
        conn = await pool.acquire(timeout=timeout)
    except TimeoutError:
        if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
            # Every connection is busy serving requests: saturated, not down. Reporting
            # NOT_SERVING here would take a loaded replica out of rotation and push its load
            # onto the others.
            log.warning("database health check: all %d connections busy", pool.get_size())
            return True
        log.warning("database health check failed: no connection within %.1fs", timeout)
        return False
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log
        log.warning("database health check failed: %s: %s", type(exc).__name__, exc)
        return False
    try:
        return bool(await conn.fetchval("SELECT 1", timeout=timeout) == 1)
    except Exception as exc:
        log.warning("database health check failed: %s: %s", type(exc).__name__, exc)
        # A lost connection may have been detached from the pool already: then there is
        # nothing to terminate or release.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        return False
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):
            await pool.release(conn)


# A header line; the name itself is validated separately so a bad one is an error, not a
# line silently glued to the previous query.
_QUERY_HEADER = re.compile(r"^--\s*name\s*:\s*(\S*)\s*$", re.MULTILINE | re.IGNORECASE)
_QUERY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = frozenset({"names", "get"})


def parse_queries(text: str, source: str = "<sql>") -> dict[str, str]:
    """Parse ``-- name: foo`` blocks into {name: sql}.

    Rejected (ValueError naming ``source``): a name that is not lower_snake_case or is
    reserved, a name defined twice, a block without SQL, and SQL before the first header
    (comments and blank lines there are fine).
    """
    queries: dict[str, str] = {}
    matches = list(_QUERY_HEADER.finditer(text))
    preamble = text[: matches[0].start()] if matches else text
    if any(_is_sql(line) for line in preamble.splitlines()):
        raise ValueError(f"{source}: SQL before the first '-- name:' header")
    for index, match in enumerate(matches):
        name = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        if not _QUERY_NAME.match(name) or name in _RESERVED:
            raise ValueError(f"{source}:{line}: invalid query name {name!r} (lower_snake_case)")
        if name in queries:
            raise ValueError(f"{source}:{line}: query {name!r} is defined twice")
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        if not any(_is_sql(body_line) for body_line in body.splitlines()):
            raise ValueError(f"{source}:{line}: query {name!r} has no SQL")
        queries[name] = body
    return queries


def _is_sql(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("--")


def load_queries(path: Path) -> dict[str, str]:
    """Parse the ``-- name: foo`` blocks of a .sql file into {name: sql}."""
    return parse_queries(path.read_text(), str(path))


class Queries:
    """Attribute access to the named queries of one file: ``Q.get_user`` (or ``Q["get_user"]``)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._queries = load_queries(path)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):  # never look private names up as queries (copy, pickle)
            raise AttributeError(name)
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"{self._path} has no query {name!r}") from None

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"{self._path} has no query {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._queries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._queries)

    def get(self, name: str) -> str | None:
        return self._queries.get(name)
