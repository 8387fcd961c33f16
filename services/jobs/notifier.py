"""One LISTEN connection per process, fanned out to every waiting RPC.

Idle ``ClaimJobs`` calls wait on the types they serve; ``WatchJob``/``WatchBatch`` wait on
an id. The listener connection is kept alive by ``run()`` (a background loop): when it is
lost, every waiter is woken (it re-reads the database) and the connection is re-opened, so
no notification can be missed for longer than one reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from typing import Any

import asyncpg

from services.jobs.repository import BATCH_CHANNEL, CHANGE_CHANNEL, QUEUE_CHANNEL

log = logging.getLogger("mediagrid.jobs.notifier")

Connect = Callable[[], Any]  # returns an awaitable asyncpg.Connection


class Notifier:
    def __init__(self, connect: Connect, *, check_interval: float = 2.0) -> None:
        self._connect = connect
        self._check_interval = check_interval
        self._conn: asyncpg.Connection | None = None
        self._queue: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._jobs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._batches: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.connected = asyncio.Event()
        self.received = 0

    # --- connection -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listener connection (best effort: waiters poll until it is up)."""
        try:
            await self._open()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN connection failed, retrying in the background: %s", exc)

    async def _open(self) -> None:
        conn = await self._connect()
        for channel in (QUEUE_CHANNEL, CHANGE_CHANNEL, BATCH_CHANNEL):
            await conn.add_listener(channel, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self.connected.set()
        self._wake_everyone()  # anything may have happened while we were not listening

    def _on_terminated(self, _conn: object) -> None:
        self.connected.clear()
        self._wake_everyone()

    async def run(self) -> None:
        """Background loop: re-open the connection whenever it is lost."""
        while True:
            if self._conn is None or self._conn.is_closed():
                self.connected.clear()
                try:
                    await self._open()
                    log.info("LISTEN connection (re)opened")
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("LISTEN connection failed: %s", exc)
            await asyncio.sleep(self._check_interval)

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
        if not table:
            return
        for key in payload.split(","):
            for event in table.get(key, ()):
                event.set()

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
