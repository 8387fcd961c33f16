"""One worker inside the serving process, so that `make run` processes jobs by itself.

It authenticates like any other worker: the users service (served in the same process)
issues a session for a ``service`` account, and the worker calls the jobs service over the
server's own address. Production deployments run `mediagrid worker` processes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from common.app import AppContext
from common.server import SuiteServer
from common.settings import Settings
from services.jobs import job_types
from services.jobs.worker.api import HANDLERS
from services.jobs.worker.main import handler_modules, load_handler_modules, run_worker

log = logging.getLogger("mediagrid.worker")

WORKER_ACCOUNT_EMAIL = "worker@example.com"


@contextlib.asynccontextmanager
async def embedded_worker(
    settings: Settings, server: SuiteServer, ctx: AppContext
) -> AsyncIterator[asyncio.Task[object] | None]:
    """Run a worker for every declared job type with a handler until the block exits."""
    from services.users.bootstrap import issue_service_token

    load_handler_modules(handler_modules(settings))
    # A handler of an undeclared type (imported by something else) has no jobs to run.
    declared = job_types.registry(settings)
    types = sorted(t for t in HANDLERS if t in declared)
    token = await issue_service_token(ctx, WORKER_ACCOUNT_EMAIL)
    stop = asyncio.Event()
    task: asyncio.Task[object] = asyncio.create_task(
        run_worker(
            settings,
            types=types,
            address=server.address,
            token=token,
            stop=stop,
            handle_signals=False,
        ),
        name="embedded-worker",
    )
    log.info("embedded worker running job types: %s", ", ".join(types))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
