"""Assembles a running suite: settings -> pool -> migrations -> services -> server."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc

from common import db
from common.activity import ActivityRecorder, LoggingActivityRecorder
from common.app import AppContext
from common.aws import AwsClients
from common.dependencies import DATABASE
from common.embedded import create_buckets
from common.health import probe_bound
from common.interceptors import Authenticator
from common.migrations import migrate
from common.registry import ServiceSpec, resolve
from common.server import SuiteServer
from common.settings import ConfigurationError, Settings
from common.tls import CertificateAuthenticator

log = logging.getLogger("mediagrid.runtime")
# The database health probe's own bound (a trivial query answers in milliseconds).
DB_PROBE_SECONDS = 2.0


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
    activity: ActivityRecorder | None = None,
    specs: Sequence[ServiceSpec] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    server: SuiteServer | None = None,
) -> AsyncIterator[tuple[SuiteServer, AppContext]]:
    """Start the named services in this process on one server; stop them on exit.

    The settings must already point at a database and (if needed) an S3 endpoint: the
    embedded fallbacks are started by the launcher before this is called. ``specs``
    replaces the lookup of ``names`` (an empty list serves only health and reflection);
    ``interceptors`` run before the suite's own (telemetry puts its span there). With
    ``settings.s3_create_buckets`` (dev/test only) the versioned buckets are created first.
    ``server`` is one the caller has already bound (the launcher binds before it starts the
    embedded stores); otherwise the port is bound here, before the pool opens: either way a
    busy port fails before any work.
    """
    specs = resolve(list(names)) if specs is None else list(specs)
    if server is None:
        server = SuiteServer(settings, extra_interceptors=interceptors)
    else:
        server.settings = settings  # the effective ones (embedded stores' addresses)
    try:
        server.bind(port)
        async with _suite_context(settings, specs, authenticator, activity) as ctx:
            try:
                instances = [await spec.create(ctx) for spec in specs]
                if ctx.authenticator is None and settings.users_address:
                    # common.auth belongs to the users service's contract (a remote
                    # Authenticate call).
                    auth = importlib.import_module("common.auth")
                    ctx.authenticator = auth.remote_authenticator(ctx)
                # Ends by its own bound, under the health monitor's, so that it is a verdict
                # for the database's breaker (as the S3 probe, files.storage).
                probe = min(DB_PROBE_SECONDS, probe_bound(settings.health_check_timeout_seconds))
                server.add_services(
                    instances,
                    authenticator=ctx.authenticator,
                    certificates=_certificate_authenticator(settings, ctx),
                    dependency_checks={DATABASE: lambda: db.check_health(ctx.pool, probe)},
                    dependencies=ctx.dependencies,
                )
                await server.start()
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
                await server.stop()  # before the pool closes: in-flight calls still use it
    finally:
        await server.stop()  # start-up failed before the pool: give the port back


def _certificate_authenticator(
    settings: Settings, ctx: AppContext
) -> CertificateAuthenticator | None:
    """Client certificates mapped to service users, resolved by the users service here."""
    if not settings.tls_client_principals:
        return None
    if ctx.service_principals is None:
        raise ConfigurationError(
            "MEDIAGRID_TLS_CLIENT_PRINCIPALS needs the users service in this process "
            "(elsewhere, callers present a token over mutual TLS)"
        )
    return CertificateAuthenticator(
        settings.tls_client_principals,
        ctx.service_principals,
        ttl_seconds=settings.auth_cache_ttl_seconds,
    )


@contextlib.asynccontextmanager
async def _suite_context(
    settings: Settings,
    specs: Sequence[ServiceSpec],
    authenticator: Authenticator | None,
    activity: ActivityRecorder | None,
) -> AsyncIterator[AppContext]:
    """What the services share: the pool (migrated), the buckets, the activity recorder."""
    raw_pool = await db.create_pool(settings)
    # Every statement of the services goes through the database dependency (AppContext binds
    # the pool to ctx.dependencies.database); migrations run before serving, unbounded.
    pool = db.SuitePool(raw_pool, settings, keep_connections=True)  # it alone closes raw_pool
    ctx = AppContext(
        settings=settings, pool=pool, aws=AwsClients(settings), authenticator=authenticator
    )
    try:
        if settings.s3_create_buckets:
            await create_buckets(settings)
        await migrate_all(raw_pool, specs)
        ctx.activity = activity or _activity_recorder(ctx, specs)
        yield ctx
    finally:
        await ctx.close_channels()
        await pool.close()


def _activity_recorder(ctx: AppContext, specs: Sequence[ServiceSpec]) -> ActivityRecorder:
    """The one recorder of the process, chosen before any service is built: the log's owner
    when it runs here, else a remote one when its address is known, else the process log."""
    for spec in specs:
        recorder = spec.activity_recorder(ctx)
        if recorder is not None:
            return recorder
    if ctx.settings.users_address:
        from common.auth import remote_activity_recorder

        return remote_activity_recorder(ctx)
    return LoggingActivityRecorder()
