"""One worker inside the serving process, so that `make run` processes jobs by itself.

It authenticates like any other worker: the users service (served in the same process)
issues a session for a ``service`` account, and the worker calls the jobs service over the
server's own address. Production deployments run `mediagrid worker` processes instead.

The worker is supervised: when it dies (an exception, a claim the server refuses for good,
a token it cannot obtain) the death is logged at ERROR with its cause and the worker is
started again (with a fresh token) after a full-jitter backoff that grows with consecutive
deaths. Its health entry ``mediagrid.jobs.v1.EmbeddedWorker`` on the server's health
service is SERVING while it runs and NOT_SERVING while it is down or restarting; the
services' own entries and the overall status do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from common.app import AppContext
from common.resilience import backoff_delay
from common.server import NOT_SERVING, SERVING, SuiteServer
from common.settings import Settings
from services.jobs.worker.main import run_worker, runnable_types
from services.jobs.worker.runtime import UnknownJobType

log = logging.getLogger("mediagrid.worker")

WORKER_ACCOUNT_EMAIL = "worker@example.com"
# The health service name that reports whether the embedded worker runs.
HEALTH_SERVICE_NAME = "mediagrid.jobs.v1.EmbeddedWorker"
# Backoff before a restart: full jitter over base * 2^(deaths in a row - 1), capped.
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 60.0


class EmbeddedWorker:
    """Runs ``run_worker`` for ``types`` until ``close()``, restarting it whenever it dies."""

    def __init__(
        self,
        settings: Settings,
        server: SuiteServer,
        ctx: AppContext,
        types: Sequence[str],
        *,
        restart_delay: float = RESTART_DELAY_SECONDS,
        restart_delay_max: float = RESTART_DELAY_MAX_SECONDS,
    ) -> None:
        self.settings = settings
        self.server = server
        self.ctx = ctx
        self.types = list(types)
        self.restart_delay = restart_delay
        self.restart_delay_max = restart_delay_max
        self.deaths = 0  # every death since start
        self.starts = 0  # every run started (the first one included)
        self._closing = asyncio.Event()
        self._run_stop: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._health(NOT_SERVING)
        self.task = asyncio.create_task(self._supervise(), name="embedded-worker")

    async def close(self) -> None:
        """Stop the worker gracefully (it releases its jobs) and stop restarting it."""
        self._closing.set()
        if self._run_stop is not None:
            self._run_stop.set()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task
        await self._health(NOT_SERVING)

    async def _supervise(self) -> None:
        in_a_row = 0
        while not self._closing.is_set():
            began = time.monotonic()
            try:
                await self._run_once()
            except UnknownJobType as exc:  # configuration: a restart cannot fix it
                await self._health(NOT_SERVING)
                log.error("embedded worker cannot run, not restarting it: %s", exc)
                return
            except Exception as exc:
                cause: BaseException | None = exc
            else:
                if self._closing.is_set():
                    return
                cause = None
            await self._health(NOT_SERVING)
            if time.monotonic() - began > self.restart_delay_max:
                in_a_row = 0  # it ran for a good while: start the backoff over
            in_a_row += 1
            self.deaths += 1
            delay = backoff_delay(in_a_row, self.restart_delay, self.restart_delay_max)
            log.error(
                "embedded worker died (%s); restarting in %.1fs (%d death(s) in a row)",
                _describe(cause),
                delay,
                in_a_row,
                exc_info=cause,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _run_once(self) -> None:
        from services.users.bootstrap import issue_service_token

        token = await issue_service_token(self.ctx, WORKER_ACCOUNT_EMAIL)
        if self._closing.is_set():
            return
        # Its own stop event: the runtime sets it itself on a fatal claim error.
        self._run_stop = stop = asyncio.Event()
        self.starts += 1
        await self._health(SERVING)
        await run_worker(
            self.settings,
            types=self.types,
            address=self.server.address,
            token=token,
            stop=stop,
            handle_signals=False,
        )

    async def _health(self, status: int) -> None:
        await self.server.health.set(HEALTH_SERVICE_NAME, status)


def _describe(cause: BaseException | None) -> str:
    if cause is None:
        return "it stopped by itself"
    if isinstance(cause, grpc.aio.AioRpcError):  # its status and message say more than repr
        return f"{cause.code().name}: {cause.details()}"
    return f"{type(cause).__name__}: {cause}"


@contextlib.asynccontextmanager
async def embedded_worker(
    settings: Settings,
    server: SuiteServer,
    ctx: AppContext,
    *,
    restart_delay: float = RESTART_DELAY_SECONDS,
    restart_delay_max: float = RESTART_DELAY_MAX_SECONDS,
) -> AsyncIterator[EmbeddedWorker]:
    """Run a supervised worker for every declared job type with a handler until the block exits."""
    # A handler of an undeclared type (imported by something else) has no jobs to run.
    types = runnable_types(settings)
    worker = EmbeddedWorker(
        settings,
        server,
        ctx,
        types,
        restart_delay=restart_delay,
        restart_delay_max=restart_delay_max,
    )
    await worker.start()
    log.info("embedded worker running job types: %s", ", ".join(types))
    try:
        yield worker
    finally:
        await worker.close()
