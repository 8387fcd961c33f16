"""The re-read of a WatchJob/WatchBatch stream, which rides out a database blip.

A watch re-reads its job or batch whenever the notifier says it may have changed. A
connection-level failure of that read (a pooled connection whose backend was terminated, a
pool that cannot connect, a dependency reported unavailable) does not end the stream: the
read is retried with exponential backoff and full jitter until it succeeds, and at once when
the notifier re-subscribes (it wakes every waiter then). The stream still ends when the
client goes away or its deadline passes: gRPC cancels the handler, and the cancellation
passes through the wait. Any other error ends the stream as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from common.db import CONNECTION_LOST
from common.errors import Unavailable
from common.resilience import backoff_delay
from services.jobs.notifier import wait_event

T = TypeVar("T")
log = logging.getLogger("mediagrid.jobs.watch")

# What a database blip looks like to a statement: the connection or the pool failed, not the
# statement. ``Unavailable`` is what a dependency wrapper (deadline bound, circuit breaker)
# raises for the same condition.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    asyncpg.InterfaceError,  # "connection is closed", a pool being re-created
    Unavailable,
)
RETRY_BASE_SECONDS = 0.1
RETRY_CAP_SECONDS = 5.0


async def reread(read: Callable[[], Awaitable[T]], changed: asyncio.Event, what: str) -> T:
    """``read()``, retried on transient failures until it succeeds (see the module docstring).

    ``changed`` is the watcher's notifier event: it is cleared before every attempt, so a
    notification that arrives during the read makes the caller read once more, and a
    re-subscription of the notifier cuts a backoff short.
    """
    failures = 0
    while True:
        changed.clear()
        try:
            result = await read()
        except TRANSIENT_ERRORS as exc:
            failures += 1
            delay = backoff_delay(failures, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
            log.warning(
                "re-reading %s failed (%d in a row): %s: %s; retrying in %.2fs",
                what,
                failures,
                type(exc).__name__,
                exc,
                delay,
            )
            await wait_event(changed, delay)
            continue
        if failures:
            log.info("re-reading %s succeeded after %d failure(s)", what, failures)
        return result
