"""The asyncpg pool: connect with retry, per-connection settings and codecs, health, close;
``SuitePool``, the path every statement of the suite takes (breaker, time bound, retry of a
statement whose pooled connection was found dead, the transaction helper).

Also the named-query loader: each service keeps its SQL in ``sql/queries.sql`` as blocks
headed ``-- name: <query_name>`` and loads them once at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from common import deadlines
from common.errors import Aborted, Unavailable
from common.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpen,
    Dependency,
    backoff_delay,
    retry_async,
)
from common.settings import Settings

T = TypeVar("T")

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


class DatabaseBusy(Unavailable):
    """Every pooled connection stayed busy for the whole time bound; retry later."""

    default_reason = "DATABASE_BUSY"


def connection_failed(exc: BaseException) -> bool:
    """True for failures that say the database (not the statement) is in trouble.

    A constraint violation or a bad query proves the server answers: the breaker counts it
    as a success. A saturated pool (``DatabaseBusy``) says nothing about the server.
    """
    if isinstance(exc, DatabaseBusy):
        return False
    if isinstance(exc, Unavailable):
        return True
    return isinstance(exc, CONNECTION_LOST)


def never_sent(exc: BaseException) -> bool:
    """The statement never left this process: its connection was found dead first.

    asyncpg refuses to start a statement on a protocol that is still busy with the error the
    server sent when it killed the backend ("cannot switch to state ...", checked before any
    message is written), or on a connection it already knows is closed.
    """
    if isinstance(exc, asyncpg.InternalClientError):
        return str(exc).startswith("cannot switch to state")
    if isinstance(exc, asyncpg.InterfaceError):
        return str(exc).endswith("connection is closed")
    return False


def connection_lost(exc: BaseException) -> bool:
    """The connection broke under a statement (not a time bound running out)."""
    if never_sent(exc):
        return True
    return isinstance(exc, CONNECTION_LOST) and not isinstance(exc, TimeoutError)


class SuiteConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """A pool connection that knows whether its session carries state past a transaction.

    asyncpg's default release runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one extra round trip per checkout, paid by every one-query
    RPC (docs/benchmarks.md). The suite's code keeps session
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


async def check_health(pool: asyncpg.Pool | SuitePool, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """True when a connection can run a trivial query within ``timeout`` seconds.

    A ``SuitePool`` is probed through its breaker (``SuitePool.check_health``): not healthy
    while the circuit is open.

    Never hangs: a connection whose query timed out is terminated, not handed back to the
    pool as is (asyncpg's release would wait, shielded and without a limit, for the hung
    query to be reset). A pool whose connections are all busy counts as healthy.
    """
    if isinstance(pool, SuitePool):
        return await pool.check_health(timeout)
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


# --- SuitePool: the path of every statement ---------------------------------------------

# The name of the database dependency (common.dependencies.DATABASE, which imports this module).
DATABASE = "postgresql"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"

# A transaction that lost a race is run again from the start, up to this many attempts in all,
# with full-jitter backoff between them: a conflict clears as soon as the other side commits.
TRANSACTION_ATTEMPTS = 4
TRANSACTION_BACKOFF_SECONDS = 0.02
TRANSACTION_BACKOFF_CAP_SECONDS = 0.5
CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
)


# What ``SuitePool._once`` returns when the statement may run once more on a fresh connection.
_RETRY: Any = object()


class DatabaseTimeout(Unavailable):
    """The database did not answer within the time bound; retry later."""

    default_reason = DATABASE_UNAVAILABLE
    # False when the caller's deadline (not our own bound) cut the call short: slowness within
    # someone else's short deadline is no proof that the database is down.
    counts_as_failure = True


def _no_verdict(exc: BaseException) -> bool:
    """Outcomes that say nothing about the database's health (the breaker ignores them)."""
    if isinstance(exc, DatabaseBusy):
        return True
    if isinstance(exc, DatabaseTimeout):
        return not exc.counts_as_failure
    return isinstance(exc, Unavailable) and exc.reason == "DEADLINE_TOO_SHORT"


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def standalone_dependency(timeout: float | None = None) -> Dependency:
    """A database dependency of its own, for a pool made outside a suite process (tools, tests)."""
    breaker = CircuitBreaker(
        DATABASE, BreakerPolicy(), reason=DATABASE_UNAVAILABLE, is_failure=connection_failed
    )
    return Dependency(
        DATABASE,
        reason=DATABASE_UNAVAILABLE,
        timeout=_default("db_call_timeout_seconds") if timeout is None else timeout,
        breaker=breaker,
    )


class _Bound:
    """How long one attempt may take: until ``deadline`` (event-loop time)."""

    __slots__ = ("cap", "deadline", "limit")

    def __init__(self, deadline: float, limit: float, cap: float) -> None:
        self.deadline = deadline
        self.limit = limit
        self.cap = cap

    @property
    def cut_by_caller(self) -> bool:
        return self.limit < self.cap


class SuitePool:
    """The suite's asyncpg pool: every statement goes through the database ``Dependency``.

    Each call is refused at once while the dependency's breaker is open (UNAVAILABLE, reason
    DATABASE_UNAVAILABLE, metadata ``circuit=open``, a RetryInfo); otherwise it is bounded by
    ``deadlines.bound(cap)``: the incoming RPC's remaining deadline, capped by the dependency's
    timeout (``db_call_timeout_seconds``) or by the call's own ``cap=`` (background chunks
    pass ``long_cap``). A statement that runs out of time is UNAVAILABLE and its
    connection is terminated, never handed back to the pool in the middle of a query. A lost
    connection is UNAVAILABLE (DATABASE_UNAVAILABLE, RetryInfo) and counts against the breaker.
    Waiting for a free connection is not a database failure: a pool that stays saturated for
    the whole bound answers UNAVAILABLE with reason DATABASE_BUSY and leaves the breaker alone.

    Retry rule of the single-statement methods (``fetch``, ``fetchrow``, ``fetchval``,
    ``execute``, ``executemany``): when the pooled connection turns out to be dead, the
    statement runs once more, on a fresh connection, if

    - it never left this process (``never_sent``: asyncpg found the connection dead before
      writing anything), whatever the statement; or
    - the caller declared it ``idempotent=True``: a read, or a write whose second run changes
      nothing the first did not (a heartbeat, an upsert to fixed values).

    Nothing else is retried: not a write lost in flight (it may have been applied), not a
    bound that ran out, not a failed connection attempt (the server is likely down). A dead
    connection also expires the pool's other connections (replaced as they are next handed
    out), as whatever killed one usually killed its idle siblings. A
    connection held with ``acquire()`` never retries (its session may carry state);
    ``transaction()`` retries whole transactions instead.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings | None = None,
        dependency: Dependency | None = None,
        *,
        keep_connections: bool = False,
    ) -> None:
        """``keep_connections``: single statements keep their connections checked out between
        statements (``_keep``); only for the one wrapper of a pool it owns and closes (the
        suite's runtime), since a pool closed from outside would wait for them forever."""
        self.raw = pool
        self._keep_limit = pool.get_max_size() if keep_connections else 0
        self._kept: list[Any] = []
        # Checkouts waiting for the pool: while any waits, a single statement hands its
        # connection back to the pool rather than keep it.
        self._waiting = 0
        call_timeout = (
            settings.db_call_timeout_seconds if settings else _default("db_call_timeout_seconds")
        )
        statement_ms = (
            settings.db_statement_timeout_ms if settings else _default("db_statement_timeout_ms")
        )
        # Rebound to the process's shared dependency by AppContext (one breaker per process).
        self.dependency = dependency or standalone_dependency(call_timeout)
        self._statement_timeout = statement_ms / 1000

    @property
    def long_cap(self) -> float:
        """The cap of a background statement (retention, sweeps): the server's own
        statement_timeout, which ends such a statement anyway; never below the call bound."""
        return max(self.dependency.timeout, self._statement_timeout)

    # --- single statements --------------------------------------------------------------

    async def fetch(
        self, query: str, *args: Any, idempotent: bool = False, cap: float | None = None
    ) -> list[Any]:
        return list(await self._run("fetch", query, args, idempotent, cap))

    async def fetchrow(
        self, query: str, *args: Any, idempotent: bool = False, cap: float | None = None
    ) -> Any:
        return await self._run("fetchrow", query, args, idempotent, cap)

    async def fetchval(
        self, query: str, *args: Any, idempotent: bool = False, cap: float | None = None
    ) -> Any:
        return await self._run("fetchval", query, args, idempotent, cap)

    async def execute(
        self, query: str, *args: Any, idempotent: bool = False, cap: float | None = None
    ) -> str:
        return str(await self._run("execute", query, args, idempotent, cap))

    async def executemany(
        self,
        query: str,
        args: Iterable[Sequence[Any]],
        *,
        idempotent: bool = False,
        cap: float | None = None,
    ) -> None:
        await self._run("executemany", query, (list(args),), idempotent, cap)

    async def _run(
        self,
        method: str,
        query: str,
        args: tuple[Any, ...],
        idempotent: bool,
        cap: float | None,
    ) -> Any:
        limit = self._cap(cap)

        async def attempts() -> Any:
            result = await self._once(method, query, args, self._bound(limit), idempotent)
            if result is _RETRY:
                result = await self._once(method, query, args, self._bound(limit), None)
            return result

        return await self._guarded(attempts, method)

    async def _once(
        self,
        method: str,
        query: str,
        args: tuple[Any, ...],
        bound: _Bound,
        idempotent: bool | None,
    ) -> Any:
        """One attempt: check a connection out and run the statement, within one bound.

        Returns ``_RETRY`` when the connection was found dead and the retry rule allows one
        more attempt (``idempotent`` None: it does not)."""
        conn: PooledConnection | None = None
        try:
            # One timeout for both steps: the hot path pays for a single timer.
            async with asyncio.timeout_at(bound.deadline):
                raw = (self._kept and await self._take_kept()) or await self._acquire_raw()
                conn = PooledConnection(self, raw, bound.cap)
                return await getattr(raw, method)(query, *args)
        except TimeoutError as exc:
            if conn is None:
                raise self._checkout_timed_out(method, bound) from exc
            conn.terminate()
            raise self._timed_out(method, bound) from exc
        except asyncio.CancelledError:
            if conn is not None:
                conn.terminate()
            raise
        except Exception as exc:
            if conn is None or not connection_lost(exc):
                raise
            await conn.discard()
            if idempotent is None or not (never_sent(exc) or (idempotent and connection_lost(exc))):
                raise
            log.info(
                "database connection found dead (%s: %s); running %s again on a fresh connection",
                type(exc).__name__,
                exc,
                method,
            )
            return _RETRY
        finally:
            if conn is not None and not self._keep(conn.raw):
                # A single statement never leaves session state behind: nothing to reset.
                await conn.release(bounded=False)

    def _keep(self, raw: Any) -> bool:
        """Keep ``raw`` checked out for the next single statement instead of releasing it.

        asyncpg's checkout and release (a proxy, a future, a shielded release task, an
        inactivity timer per use) cost about as much CPU as the statement's own round trip; a
        kept connection skips them. Only a connection that is open and outside a transaction
        is kept (a single statement leaves no session state), and none while a checkout waits
        for the pool, so that kept connections never starve transactions or held connections.
        """
        if len(self._kept) >= self._keep_limit or self._waiting:
            return False
        try:
            if raw.is_closed() or raw.is_in_transaction():
                return False
        except asyncpg.InterfaceError:  # detached from the pool already
            return False
        self._kept.append(raw)
        return True

    async def _take_kept(self) -> Any:
        """A kept connection that is still open, or None; closed ones go back to the pool
        (which replaces them, as it does for an idle connection found closed)."""
        while self._kept:
            raw = self._kept.pop()
            try:
                if not raw.is_closed():
                    return raw
            except asyncpg.InterfaceError:  # detached from the pool already
                continue
            with contextlib.suppress(Exception):
                await self.raw.release(raw)
        return None

    async def _acquire_raw(self) -> Any:
        self._waiting += 1
        try:
            return await self.raw.acquire()
        finally:
            self._waiting -= 1

    async def release_kept(self) -> None:
        """Hand every kept connection back to the pool (before closing it, after expiring its
        connections: the pool then closes those of the old generation)."""
        kept, self._kept = self._kept, []
        for raw in kept:
            with contextlib.suppress(Exception):  # a dead one is dropped by the pool
                await self.raw.release(raw)

    # --- held connections and transactions ----------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, *, cap: float | None = None) -> AsyncIterator[PooledConnection]:
        """A connection of one's own for several statements (each bounded and guarded)."""
        limit = self._cap(cap)

        async def checkout() -> PooledConnection:
            return await self._checkout(self._bound(limit), "acquire")

        # Getting a connection proves nothing by itself: only its statements give verdicts.
        conn = await self._guarded(checkout, "acquire", verdict_on_success=False)
        conn._cap = limit
        try:
            yield conn
        finally:
            await conn.release()

    async def transaction(
        self,
        body: Callable[[PooledConnection], Awaitable[T]],
        *,
        what: str = "transaction",
        isolation: str | None = None,
        readonly: bool = False,
        attempts: int = TRANSACTION_ATTEMPTS,
        cap: float | None = None,
    ) -> T:
        """Run ``body(conn)`` in one transaction; run the whole of it again after a conflict.

        ``body`` is called again from the start (on a fresh connection when the old one
        died), up to ``attempts`` tries with full-jitter backoff, after a serialization failure
        (40001), a deadlock (40P01) or a pooled connection lost before COMMIT was sent (a new
        connection that cannot be made is UNAVAILABLE at once: the server is away); ``body``
        must touch the database only through ``conn`` and have no other side effects. Every other exit
        rolls the transaction back (an error, a bound that ran out, cancellation; a connection
        that cannot roll back is terminated, which makes the server roll back). A connection
        lost during COMMIT is not retried: whether the transaction committed is unknown, so
        the call is UNAVAILABLE with metadata ``commit_outcome=unknown``. Conflicts that
        outlast the attempts are ABORTED (reason DATABASE_CONFLICT). Each attempt is bounded
        like a single call (``cap`` overrides its cap), and the whole helper is one call for the
        breaker.
        """
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        limit = self._cap(cap)

        async def run() -> T:
            for attempt in range(1, attempts + 1):
                try:
                    return await self._transaction_once(
                        body, self._bound(limit), what, isolation, readonly
                    )
                except Exception as exc:
                    conflict = isinstance(exc, CONFLICTS)
                    if not (conflict or connection_lost(exc)):
                        raise
                    if attempt == attempts:
                        if conflict:
                            raise Aborted(
                                f"{what} kept conflicting with concurrent transactions "
                                f"({attempts} attempts); retry later",
                                reason="DATABASE_CONFLICT",
                                metadata={
                                    "sqlstate": getattr(exc, "sqlstate", ""),
                                    "attempts": attempts,
                                },
                            ) from exc
                        raise
                    delay = backoff_delay(
                        attempt, TRANSACTION_BACKOFF_SECONDS, TRANSACTION_BACKOFF_CAP_SECONDS
                    )
                    log.info(
                        "%s attempt %d/%d failed (%s: %s); running it again in %.3fs",
                        what,
                        attempt,
                        attempts,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
            raise AssertionError("unreachable")

        return await self._guarded(run, what)

    async def _transaction_once(
        self,
        body: Callable[[PooledConnection], Awaitable[T]],
        bound: _Bound,
        what: str,
        isolation: str | None,
        readonly: bool,
    ) -> T:
        try:
            conn = await self._checkout(bound, what)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            # A new connection failed: the server is away, and running again will not help.
            raise self.dependency.unavailable(
                f"cannot connect to {self.dependency.name} ({what}: {type(exc).__name__}); "
                "retry later",
                operation=what,
            ) from exc
        conn._within = bound
        try:
            tx = conn.raw.transaction(isolation=isolation, readonly=readonly)
            await conn._bounded(tx.start, "BEGIN", bound)
            try:
                result = await body(conn)
            except BaseException as exc:
                await conn._rollback(tx, exc)
                raise
            try:
                await conn._bounded(tx.commit, "COMMIT", bound)
            except Exception as exc:
                if never_sent(exc) or not (
                    isinstance(exc, DatabaseTimeout) or connection_lost(exc)
                ):
                    raise  # COMMIT never went out, or the server refused it: rolled back
                raise self.dependency.unavailable(
                    f"the connection to {self.dependency.name} was lost during COMMIT ({what}): "
                    "whether the transaction was applied is unknown; check before retrying",
                    operation=what,
                    commit_outcome="unknown",
                ) from exc
            return result
        finally:
            conn._within = None
            await conn.release()

    # --- health -------------------------------------------------------------------------

    async def check_health(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
        """False while the breaker is open or when ``SELECT 1`` fails within ``timeout``.

        The probe goes through the breaker like any call, so it feeds the breaker and, once
        the circuit is half-open, can be the trial that closes it again. A pool whose
        connections are all busy counts as healthy (saturated, not down: NOT_SERVING would
        push a loaded replica's work onto the others).
        """
        try:
            return bool(await self.fetchval("SELECT 1", idempotent=True, cap=timeout) == 1)
        except DatabaseBusy:
            log.warning("database health check: all %d connections busy", self.raw.get_size())
            return True
        except Exception as exc:  # any failure means "not healthy"; the reason goes to the log
            log.warning("database health check failed: %s: %s", type(exc).__name__, exc)
            return False

    # --- pool ---------------------------------------------------------------------------

    async def close(self) -> None:
        await self.release_kept()
        await self.raw.close()

    def terminate(self) -> None:
        self._kept.clear()
        self.raw.terminate()

    def get_size(self) -> int:
        return int(self.raw.get_size())

    def get_idle_size(self) -> int:
        return int(self.raw.get_idle_size())

    def get_max_size(self) -> int:
        return int(self.raw.get_max_size())

    # --- internals ----------------------------------------------------------------------

    def _cap(self, cap: float | None) -> float:
        return self.dependency.timeout if cap is None else cap

    def _bound(self, cap: float) -> _Bound:
        limit = deadlines.bound(cap, dependency=self.dependency.name)
        return _Bound(asyncio.get_running_loop().time() + limit, limit, cap)

    def _timed_out(self, what: str, bound: _Bound) -> DatabaseTimeout:
        exc = DatabaseTimeout(
            f"{self.dependency.name} did not answer within {bound.limit:.1f}s ({what}); "
            "retry later",
            reason=self.dependency.reason,
            metadata={
                "dependency": self.dependency.name,
                "operation": what,
                "timeout_seconds": round(bound.limit, 3),
            },
            retry_after_seconds=self.dependency.retry_after_seconds,
        )
        exc.counts_as_failure = not bound.cut_by_caller
        return exc

    def _saturated(self) -> bool:
        return bool(
            self.raw.get_size() >= self.raw.get_max_size() and self.raw.get_idle_size() == 0
        )

    async def _checkout(self, bound: _Bound, what: str) -> PooledConnection:
        kept = self._kept and await self._take_kept()
        if kept:
            return PooledConnection(self, kept, self._cap(None))
        try:
            async with asyncio.timeout_at(bound.deadline):
                raw = await self._acquire_raw()
        except TimeoutError as exc:
            raise self._checkout_timed_out(what, bound) from exc
        return PooledConnection(self, raw, self._cap(None))

    def _checkout_timed_out(self, what: str, bound: _Bound) -> Unavailable:
        if not self._saturated():
            return self._timed_out(what, bound)
        return DatabaseBusy(
            f"all {self.raw.get_size()} database connections stayed busy for "
            f"{bound.limit:.1f}s ({what}); retry later",
            metadata={"dependency": self.dependency.name, "operation": what},
            retry_after_seconds=self.dependency.retry_after_seconds,
        )

    async def _guarded(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        *,
        verdict_on_success: bool = True,
    ) -> T:
        """Run ``operation`` as one call of the breaker; a lost connection becomes UNAVAILABLE.

        The outcome (ok, error, timeout, refused) and duration go to the dependency's
        observer (the ``mediagrid.dependency.duration`` metric in a suite process)."""
        breaker = self.dependency.breaker
        try:
            ticket = breaker.before_call()
        except CircuitOpen:
            self._observe("refused", 0.0)
            raise
        started = time.perf_counter()
        try:
            result = await operation()
        except Exception as exc:
            elapsed = time.perf_counter() - started
            if _no_verdict(exc):
                breaker.release(ticket)
            elif breaker.is_failure(exc):
                breaker.record_failure(ticket, timed_out=isinstance(exc, DatabaseTimeout))
            else:
                breaker.record_success(ticket)
            if isinstance(exc, DatabaseTimeout | DatabaseBusy):
                self._observe("timeout", elapsed)
            elif _no_verdict(exc):  # the caller's deadline left no time to try
                self._observe("refused", elapsed)
            else:
                self._observe("error" if breaker.is_failure(exc) else "ok", elapsed)
            if connection_lost(exc):
                raise self.dependency.unavailable(
                    f"lost the connection to {self.dependency.name} ({what}: "
                    f"{type(exc).__name__}); retry later",
                    operation=what,
                ) from exc
            raise
        except BaseException:
            breaker.release(ticket)
            raise
        if verdict_on_success:
            breaker.record_success(ticket)
            self._observe("ok", time.perf_counter() - started)
        else:
            breaker.release(ticket)
        return result

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.dependency.observe is not None:
            self.dependency.observe(self.dependency.name, outcome, seconds)


def as_suite_pool(pool: asyncpg.Pool | SuitePool) -> SuitePool:
    """``pool`` itself, or a plain asyncpg pool (tools, tests) wrapped with the default bounds
    and a breaker of its own."""
    return pool if isinstance(pool, SuitePool) else SuitePool(pool)


class PooledConnection:
    """A connection checked out of a ``SuitePool``, with the same statement methods.

    Outside a transaction helper each statement is one bounded call through the breaker;
    inside ``SuitePool.transaction`` the transaction's bound and verdict apply. ``raw`` is the
    asyncpg connection, for what these methods do not cover (its statements bypass the
    breaker and the bound).
    """

    __slots__ = ("_cap", "_within", "pool", "raw")

    def __init__(self, pool: SuitePool, raw: Any, cap: float) -> None:
        self.pool = pool
        self.raw = raw
        self._cap = cap
        self._within: _Bound | None = None  # set while a transaction helper runs on it

    async def fetch(self, query: str, *args: Any, cap: float | None = None) -> list[Any]:
        return list(await self._call("fetch", query, args, cap))

    async def fetchrow(self, query: str, *args: Any, cap: float | None = None) -> Any:
        return await self._call("fetchrow", query, args, cap)

    async def fetchval(self, query: str, *args: Any, cap: float | None = None) -> Any:
        return await self._call("fetchval", query, args, cap)

    async def execute(self, query: str, *args: Any, cap: float | None = None) -> str:
        return str(await self._call("execute", query, args, cap))

    async def executemany(
        self, query: str, args: Iterable[Sequence[Any]], *, cap: float | None = None
    ) -> None:
        await self._call("executemany", query, (list(args),), cap)

    def declare_session_state(self) -> None:
        declare_session_state(self.raw)

    def is_closed(self) -> bool:
        try:
            return bool(self.raw.is_closed())
        except asyncpg.InterfaceError:  # asyncpg already detached it from the pool: closed
            return True

    def terminate(self) -> None:
        """Close the connection at once; the pool replaces it (a detached one is left alone)."""
        with contextlib.suppress(asyncpg.InterfaceError):
            self.raw.terminate()

    async def discard(self) -> None:
        """Close a connection found dead, and expire its siblings: whatever killed it (a
        restart, a failover, a mass pg_terminate_backend) usually took its idle siblings too,
        and the pool replaces them as it next hands them out rather than let a retry meet
        another dead one."""
        self.terminate()
        await self.pool.raw.expire_connections()
        await self.pool.release_kept()

    async def release(self, *, bounded: bool = True) -> None:
        """Hand the connection back; ``bounded``: its session reset (if it declared session
        state) may take at most the dependency's timeout."""
        timeout = self.pool.dependency.timeout if bounded else None
        try:
            await self.pool.raw.release(self.raw, timeout=timeout)
        except Exception as exc:  # asyncpg terminated it: the pool makes a new one
            log.warning("database connection dropped on release: %s: %s", type(exc).__name__, exc)

    async def _call(self, method: str, query: str, args: tuple[Any, ...], cap: float | None) -> Any:
        if self.is_closed():
            # Closed after an earlier statement failed or ran out of time (its session, and
            # anything it held, is gone): say so rather than asyncpg's "released" error.
            raise self.pool.dependency.unavailable(
                f"the connection to {self.pool.dependency.name} was closed after an earlier "
                f"failure ({method}); retry later",
                operation=method,
            )
        if self._within is not None:
            return await self._statement(method, query, args, self._within)
        limit = self._cap if cap is None else cap

        async def once() -> Any:
            return await self._statement(method, query, args, self.pool._bound(limit))

        return await self.pool._guarded(once, method)

    async def _statement(
        self, method: str, query: str, args: tuple[Any, ...], bound: _Bound
    ) -> Any:
        async def run() -> Any:
            return await getattr(self.raw, method)(query, *args)

        return await self._bounded(run, method, bound)

    async def _bounded(self, operation: Callable[[], Awaitable[T]], what: str, bound: _Bound) -> T:
        try:
            async with asyncio.timeout_at(bound.deadline):
                return await operation()
        except TimeoutError as exc:
            # asyncpg would wait, shielded and without a limit, for the hung statement to be
            # cancelled before handing the connection back: close it instead.
            self.terminate()
            raise self.pool._timed_out(what, bound) from exc
        except asyncio.CancelledError:
            # Interrupted in the middle of a statement: the session's state is unknown.
            self.terminate()
            raise
        except Exception as exc:
            if connection_lost(exc):
                await self.discard()
            raise

    async def _rollback(self, tx: Any, cause: BaseException) -> None:
        """Roll back after ``cause``; terminate when that cannot be done cleanly."""
        if self.is_closed():
            return  # the server rolls back a transaction whose connection is gone
        if not isinstance(cause, Exception) or self._within is None:
            self.terminate()
            return
        try:
            await self._bounded(tx.rollback, "ROLLBACK", self._within)
        except Exception as exc:
            log.warning("rollback failed (%s: %s); connection closed", type(exc).__name__, exc)
            self.terminate()


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
