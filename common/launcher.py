"""Process-level start-up for the CLI: telemetry, embedded dependencies, then the suite.

``launched()`` is the whole start-up as one async context manager (tests use it directly);
``serve_forever()`` adds signal handling: SIGTERM or Ctrl-C, even during start-up, stops
everything in reverse order (server gracefully, pool, embedded S3, embedded PostgreSQL)
and returns normally, so the process exits 0. A second signal skips the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    try:
        async with (
            embedded_dependencies(settings, buckets=False) as effective,
            running_suite(
                effective,
                names,
                specs=specs,
                port=port,
                interceptors=telemetry.server_interceptors(),
            ) as (server, ctx),
        ):
            yield server, ctx, effective
    finally:
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
        async with launched(settings, names, specs=specs) as (server, _ctx, effective):
            state["serving"] = True
            if on_ready is not None:
                on_ready(server, effective)
            await stop.wait()
            log.info(
                "signal received; shutting down (grace %.0fs)",
                settings.grpc_shutdown_grace_seconds,
            )
            await server.stop()
    except asyncio.CancelledError:
        if not state["signalled"]:
            raise
        main.uncancel()
        log.info("stopped on signal")
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def migrate_only(settings: Settings, names: Sequence[str]) -> dict[str, list[int]]:
    """Apply pending migrations (into the embedded database when none is configured)."""
    specs = resolve(list(names))
    async with embedded_dependencies(settings, s3=False) as effective:
        pool = await db.create_pool(effective)
        try:
            return await migrate_all(pool, specs)
        finally:
            await pool.close()
