"""One LISTEN connection per process, fanned out to every waiting RPC.

Idle ``ClaimJobs`` calls wait on the types they serve; ``WatchJob``/``WatchBatch`` wait on
an id. The listener connection is kept alive by ``run()`` (a background loop): when it is
lost (terminated, or silent past a liveness probe), every waiter is woken and the connection
is re-opened with exponential backoff and full jitter; once it listens again every waiter is
woken once more, since notifications sent while nobody listened are gone: each re-reads the
database, so nothing is missed for longer than one reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from typing import Any

import asyncpg

from common.db import CONNECTION_LOST
from common.resilience import backoff_delay
from services.jobs.repository import BATCH_CHANNEL, CHANGE_CHANNEL, QUEUE_CHANNEL

log = logging.getLogger("mediagrid.jobs.notifier")

Connect = Callable[[], Any]  # returns an awaitable asyncpg.Connection

# Failures of opening or probing the listener connection that waiting may heal (anything
# else is a bug and crashes the loop, which the server's supervisor restarts and logs).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    asyncpg.PostgresError,  # e.g. the database is being dropped or is not accepting yet
    asyncpg.InterfaceError,
)


class Notifier:
    """``check_interval``: seconds between liveness probes of the listener connection (a
    connection whose peer vanished without a reset would otherwise look open forever);
    ``reconnect_base``/``reconnect_cap``: the backoff between failed reconnects."""

    def __init__(
        self,
        connect: Connect,
        *,
        check_interval: float = 2.0,
        reconnect_base: float = 0.2,
        reconnect_cap: float = 10.0,
    ) -> None:
        self._connect = connect
        self._check_interval = check_interval
        self._reconnect_base = reconnect_base
        self._reconnect_cap = reconnect_cap
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()  # set when the connection is gone: reconnect now
        self._queue: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._jobs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._batches: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.connected = asyncio.Event()
        self.received = 0
        self.subscriptions = 0  # how many times the connection started listening

    # --- connection -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listener connection (best effort: waiters poll until it is up)."""
        try:
            await self._open()
        except CONNECTION_ERRORS as exc:
            log.warning("LISTEN connection failed, retrying in the background: %s", exc)

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            for channel in (QUEUE_CHANNEL, CHANGE_CHANNEL, BATCH_CHANNEL):
                await conn.add_listener(channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._lost.clear()
        self.subscriptions += 1
        self.connected.set()
        self._wake_everyone()  # anything may have happened while we were not listening

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._drop()

    def _drop(self) -> None:
        """Forget the connection: waiters re-read now, ``run()`` reconnects at once."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
        self.connected.clear()
        self._lost.set()
        self._wake_everyone()

    async def _alive(self) -> bool:
        """Whether the connection still answers (within the probe interval)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.execute("SELECT 1", timeout=max(self._check_interval, 1.0))
        except CONNECTION_ERRORS as exc:
            log.warning("LISTEN connection lost: %s: %s", type(exc).__name__, exc)
            return False
        return True

    async def run(self) -> None:
        """Background loop: probe the connection, re-open it with backoff when it is lost."""
        failures = 0
        while True:
            if self._conn is not None and await self._alive():
                failures = 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._check_interval):
                        await self._lost.wait()
                continue
            if self._conn is not None or self.connected.is_set():
                self._drop()
            try:
                await self._open()
            except CONNECTION_ERRORS as exc:
                failures += 1
                delay = backoff_delay(failures, self._reconnect_base, self._reconnect_cap)
                log.warning(
                    "LISTEN connection failed (%d in a row): %s: %s; retrying in %.2fs",
                    failures,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                log.info("LISTEN connection (re)opened after %d failed attempt(s)", failures)
                failures = 0

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        self._wake_everyone()

    # --- fan-out ----------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.received += 1
        if channel == QUEUE_CHANNEL:
            table = self._queue
        elif channel == CHANGE_CHANNEL:
            table = self._jobs
        else:
            table = self._batches
        if table:  # nobody waits: no need to split the payload
            _wake(table, payload.split(","))

    def wake_queue(self, types: Iterable[str]) -> bool:
        """Wake this process's idle claims of ``types`` now, as their NOTIFY will: for jobs
        this process committed. The claims need not wait for the notification's trip
        through PostgreSQL and the listener connection, nor for that connection to be up
        (the NOTIFY still goes to every other server process). True when any was waiting."""
        return _wake(self._queue, types)

    def _wake_everyone(self) -> None:
        for table in (self._queue, self._jobs, self._batches):
            for events in table.values():
                for event in events:
                    event.set()

    @contextlib.contextmanager
    def _subscribe(self, table: dict[str, set[asyncio.Event]], keys: Iterable[str]) -> Any:
        event = asyncio.Event()
        keys = list(keys)
        for key in keys:
            table[key].add(event)
        try:
            yield event
        finally:
            for key in keys:
                waiters = table.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del table[key]

    def queue(self, types: Collection[str]) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever a job of one of ``types`` may have become claimable."""
        return self._subscribe(self._queue, types)

    def job(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever the job changed."""
        return self._subscribe(self._jobs, [job_id])

    def batch(self, batch_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever a job of the batch changed."""
        return self._subscribe(self._batches, [batch_id])

    @property
    def waiter_count(self) -> int:
        return sum(len(v) for t in (self._queue, self._jobs, self._batches) for v in t.values())


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` up to ``seconds``; True when it was set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    return event.is_set()


def _wake(table: dict[str, set[asyncio.Event]], keys: Iterable[str]) -> bool:
    """Set the events waiting on any of ``keys``; True when there was one."""
    woke = False
    for key in keys:
        for event in table.get(key, ()):
            event.set()
            woke = True
    return woke
