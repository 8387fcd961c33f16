"""Process-level start-up for the CLI: telemetry, the gRPC port, embedded dependencies, then
the suite (the embedded worker last, in ``serve_forever``).

``launched()`` is the whole start-up as one async context manager (tests use it directly);
``serve_forever()`` adds signal handling: SIGTERM or Ctrl-C, even during start-up, stops
everything in reverse order (server gracefully, pool, embedded S3, embedded PostgreSQL)
and returns normally, so the process exits 0. A second signal skips the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence

from common import db
from common.app import AppContext
from common.embedded import embedded_dependencies
from common.registry import ServiceSpec, resolve
from common.runtime import migrate_all, running_suite
from common.server import SuiteServer
from common.settings import Settings
from common.telemetry import configure_telemetry

log = logging.getLogger("mediagrid.launcher")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

ReadyCallback = Callable[[SuiteServer, Settings], None]


@contextlib.asynccontextmanager
async def launched(
    settings: Settings,
    names: Sequence[str] = ("all",),
    *,
    specs: Sequence[ServiceSpec] | None = None,
    port: int | None = None,
) -> AsyncIterator[tuple[SuiteServer, AppContext, Settings]]:
    """Start telemetry, the embedded stand-ins the settings need, and the services.

    Yields the server, the shared context and the effective settings (pointing at the
    embedded database/endpoint when those were started).
    """
    telemetry = configure_telemetry(settings)
    server = SuiteServer(settings, extra_interceptors=telemetry.server_interceptors())
    try:
        # The port first: when it is taken, nothing has been started (no embedded PostgreSQL
        # or S3, no migrations, no login hint) and the error comes at once.
        server.bind(port)
        async with (
            embedded_dependencies(settings, buckets=False) as effective,
            running_suite(effective, names, specs=specs, server=server) as (server, ctx),
        ):
            yield server, ctx, effective
    finally:
        await server.stop()
        telemetry.shutdown()


async def serve_forever(
    settings: Settings,
    names: Sequence[str] = ("all",),
    *,
    specs: Sequence[ServiceSpec] | None = None,
    on_ready: ReadyCallback | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully; a signal during start-up aborts it."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    state = {"serving": False, "signalled": False}

    def on_signal() -> None:
        first = not state["signalled"]
        state["signalled"] = True
        if state["serving"] and first:
            stop.set()  # graceful: in-flight calls get the grace period
        else:
            if not first:
                log.warning("second signal: stopping now without waiting for in-flight calls")
            main.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        async with (
            launched(settings, names, specs=specs) as (server, ctx, effective),
            _maybe_embedded_worker(effective, server, ctx),
        ):
            state["serving"] = True
            if on_ready is not None:
                on_ready(server, effective)
            await stop.wait()
            log.info(
                "signal received; shutting down (grace %.0fs)",
                settings.grpc_shutdown_grace_seconds,
            )
            # Leaving the block stops the embedded worker first (it still needs the server to
            # release its jobs), then the server gracefully (running_suite), then the stores.
    except asyncio.CancelledError:
        if not state["signalled"]:
            raise
        main.uncancel()
        log.info("stopped on signal")
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _maybe_embedded_worker(
    settings: Settings, server: SuiteServer, ctx: AppContext
) -> AsyncIterator[None]:
    """Run the jobs service's in-process worker when users and jobs are both served here."""
    served = {s.name for s in server.services}
    if not (settings.embedded_worker and {"users", "jobs"} <= served):
        yield
        return
    module = importlib.import_module("services.jobs.worker.embedded")
    async with module.embedded_worker(settings, server, ctx):
        yield


async def migrate_only(settings: Settings, names: Sequence[str]) -> dict[str, list[int]]:
    """Apply pending migrations (into the embedded database when none is configured)."""
    specs = resolve(list(names))
    async with embedded_dependencies(settings, s3=False) as effective:
        pool = await db.create_pool(effective)
        try:
            return await migrate_all(pool, specs)
        finally:
            await pool.close()
