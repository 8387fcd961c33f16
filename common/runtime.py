"""Assembles a running suite: settings -> dependencies -> pool -> migrations -> services -> server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from common import db
from common.app import AppContext
from common.interceptors import Authenticator
from common.aws import AwsClients
from common.migrations import migrate
from common.registry import ServiceSpec, resolve
from common.server import SuiteServer
from common.settings import Settings

log = logging.getLogger("mediagrid.runtime")


async def migrate_all(pool: db.asyncpg.Pool, specs: Sequence[ServiceSpec]) -> dict[str, list[int]]:
    applied: dict[str, list[int]] = {}
    async with pool.acquire() as conn:
        for spec in specs:
            applied[spec.name] = await migrate(conn, spec.schema, spec.migrations)
    return applied


@contextlib.asynccontextmanager
async def running_suite(
    settings: Settings,
    names: Sequence[str] = ("all",),
    *,
    port: int | None = None,
    authenticator: Authenticator | None = None,
) -> AsyncIterator[tuple[SuiteServer, AppContext]]:
    """Start the named services in this process on one server; stop them on exit.

    The settings must already point at a database and (if needed) an S3 endpoint: the
    embedded fallbacks are started by the CLI before this is called.
    """
    specs = resolve(list(names))
    pool = await db.create_pool(settings)
    ctx = AppContext(
        settings=settings, pool=pool, aws=AwsClients(settings), authenticator=authenticator
    )
    server: SuiteServer | None = None
    try:
        await migrate_all(pool, specs)
        if settings.users_address and all(spec.name != "users" for spec in specs):
            from common.auth import remote_activity_recorder

            ctx.activity = remote_activity_recorder(ctx)
        instances = [await spec.create(ctx) for spec in specs]
        if ctx.authenticator is None and settings.users_address:
            from common.auth import remote_authenticator

            ctx.authenticator = remote_authenticator(ctx)
        server = SuiteServer(
            settings,
            instances,
            authenticator=ctx.authenticator,
            health_checks=[lambda: db.check_health(pool)],
        )
        bound = await server.start(port)
        for spec in specs:
            ctx.addresses.setdefault(spec.name, f"{settings.grpc_host}:{bound}")
        for name, address in (
            ("users", settings.users_address),
            ("jobs", settings.jobs_address),
            ("files", settings.files_address),
        ):
            if address:
                ctx.addresses.setdefault(name, address)
        yield server, ctx
    finally:
        if server is not None:
            await server.stop()
        await ctx.close_channels()
        await pool.close()
