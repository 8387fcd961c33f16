"""``mediagrid worker``: load handler modules, connect to the jobs service, run until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Sequence

from mediagrid.jobs.v1 import worker_service_pb2_grpc

from common.addresses import host_port
from common.aws import AwsClients
from common.channels import ChannelCache
from common.settings import DEMO_HANDLERS_MODULE, Settings, demo_modules_in_force
from services.jobs.worker.api import WorkerResources
from services.jobs.worker.runtime import WorkerRuntime, WorkerStats

log = logging.getLogger("mediagrid.worker")


def load_handler_modules(modules: Sequence[str]) -> list[str]:
    """Import every handler module; a module that does not exist is skipped with a warning.

    A module that exists but fails to import (a missing dependency, a syntax error) is an
    error: silently running without its handlers would leave its jobs unprocessed.
    """
    loaded = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise
            log.warning("handler module %s is not installed; its job types are unavailable", module)
            continue
        loaded.append(module)
    return loaded


def handler_modules(settings: Settings) -> list[str]:
    """The handler modules a worker loads: the demo handlers only while demo types are on."""
    return demo_modules_in_force(
        settings.worker_handler_modules, DEMO_HANDLERS_MODULE, bool(settings.demo_job_types)
    )


def runnable_types(settings: Settings) -> list[str]:
    """Every declared job type with a handler (loading the handler modules first): what a
    worker runs when it is not told which types."""
    from services.jobs import job_types
    from services.jobs.worker.api import HANDLERS

    load_handler_modules(handler_modules(settings))
    declared = job_types.registry(settings)
    return sorted(t for t in HANDLERS if t in declared)


def default_address(settings: Settings) -> str:
    return settings.jobs_address or host_port(settings.grpc_host, settings.grpc_port)


async def run_worker(
    settings: Settings,
    *,
    types: Sequence[str],
    concurrency: int | None = None,
    address: str | None = None,
    token: str | None = None,
    stop: asyncio.Event | None = None,
    worker_id: str | None = None,
    handle_signals: bool = True,
) -> WorkerStats:
    """Run a worker until ``stop`` is set (or SIGTERM/SIGINT); returns its counters."""
    load_handler_modules(handler_modules(settings))
    configured = settings.worker_api_key or settings.worker_token
    if token is None and configured is not None:
        token = configured.get_secret_value()
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
    jobs_address = address or default_address(settings)
    channels = ChannelCache(
        {
            "jobs": jobs_address,
            "users": settings.users_address or jobs_address,
            "files": settings.files_address or jobs_address,
        },
        settings.grpc_max_message_bytes,
        settings,
    )
    resources = WorkerResources(
        settings=settings, aws=AwsClients(settings), channel=channels, call_metadata=metadata
    )
    stub = worker_service_pb2_grpc.WorkerServiceStub(channels("jobs"))
    runtime = WorkerRuntime(
        stub,
        types=types,
        resources=resources,
        settings=settings,
        concurrency=concurrency,
        worker_id=worker_id,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.run(stop)
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await channels.close()
    log.info(
        "worker stopped: %d claimed, %d succeeded, %d failed, %d released",
        runtime.stats.claimed,
        runtime.stats.succeeded,
        runtime.stats.failed,
        runtime.stats.released,
    )
    return runtime.stats
