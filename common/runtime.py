"""Assembles a running suite: settings -> pool -> migrations -> services -> server."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc

from common import db
from common.app import AppContext
from common.aws import AwsClients
from common.embedded import create_buckets
from common.interceptors import Authenticator
from common.migrations import migrate
from common.registry import ServiceSpec, resolve
from common.server import SuiteServer
from common.settings import Settings

log = logging.getLogger("mediagrid.runtime")


async def migrate_all(pool: asyncpg.Pool, specs: Sequence[ServiceSpec]) -> dict[str, list[int]]:
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
    specs: Sequence[ServiceSpec] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[tuple[SuiteServer, AppContext]]:
    """Start the named services in this process on one server; stop them on exit.

    The settings must already point at a database and (if needed) an S3 endpoint: the
    embedded fallbacks are started by the launcher before this is called. ``specs``
    replaces the lookup of ``names`` (an empty list serves only health and reflection);
    ``interceptors`` run before the suite's own (telemetry puts its span there). With
    ``settings.s3_create_buckets`` (dev/test only) the versioned buckets are created first.
    """
    specs = resolve(list(names)) if specs is None else list(specs)
    raw_pool = await db.create_pool(settings)
    # Every statement of the services goes through the database dependency (AppContext binds
    # the pool to ctx.dependencies.database); migrations run before serving, unbounded.
    pool = db.SuitePool(raw_pool, settings)
    ctx = AppContext(
        settings=settings, pool=pool, aws=AwsClients(settings), authenticator=authenticator
    )
    server: SuiteServer | None = None
    try:
        if settings.s3_create_buckets:
            await create_buckets(settings)
        await migrate_all(raw_pool, specs)
        if settings.users_address and all(spec.name != "users" for spec in specs):
            from common.auth import remote_activity_recorder

            ctx.activity = remote_activity_recorder(ctx)
        instances = [await spec.create(ctx) for spec in specs]
        if ctx.authenticator is None and settings.users_address:
            # common.auth belongs to the users service's contract (a remote Authenticate call).
            auth = importlib.import_module("common.auth")
            ctx.authenticator = auth.remote_authenticator(ctx)
        server = SuiteServer(
            settings,
            instances,
            authenticator=ctx.authenticator,
            health_checks=[lambda: db.check_health(pool)],
            extra_interceptors=interceptors,
        )
        await server.start(port)
        for spec in specs:
            ctx.addresses.setdefault(spec.name, server.address)  # IPv6 hosts bracketed
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
