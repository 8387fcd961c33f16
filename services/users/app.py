"""Wiring of the users service: repository, sessions, servicer, recorder, sweep, bootstrap."""

from __future__ import annotations

import grpc
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

from common.app import AppContext, ServiceInstance
from common.auth import CachingAuthenticator, LocalAuthenticator
from common.dependencies import DATABASE
from services.users.activity import DatabaseActivityRecorder
from services.users.api_keys import ApiKeyManager, ApiKeyStore, CredentialResolver
from services.users.bootstrap import ensure_bootstrap_admin
from services.users.passwords import Passwords
from services.users.purge import UserDataPurger
from services.users.repository import UserRepository
from services.users.servicer import UserServicer
from services.users.sessions import SessionManager
from services.users.sweep import Sweeper
from services.users.usage import UsageSource

SERVICE_NAME = "mediagrid.users.v1.UserService"
PUBLIC_METHODS = [f"/{SERVICE_NAME}/Login", f"/{SERVICE_NAME}/Authenticate"]


def usage_source(ctx: AppContext) -> UsageSource:
    """Where GetUserStats gets job counts and file usage: the jobs and files services."""
    from services.users.integrations import GrpcUsageSource

    return GrpcUsageSource(ctx)


def data_purger(ctx: AppContext) -> UserDataPurger:
    """What removes a deleted user's data elsewhere: a `users.purge` job."""
    from services.users.integrations import JobPurger

    return JobPurger(ctx)


async def create(ctx: AppContext) -> ServiceInstance:
    return await build(ctx, usage=usage_source(ctx), purger=data_purger(ctx))


async def build(ctx: AppContext, *, usage: UsageSource, purger: UserDataPurger) -> ServiceInstance:
    """The service with explicit ports; installs the authenticator on ctx."""
    settings = ctx.settings
    repository = UserRepository(ctx.pool)
    passwords = Passwords.from_settings(settings)
    sessions = SessionManager(repository, settings, passwords)
    recorder = DatabaseActivityRecorder(repository)
    keys = ApiKeyManager(ApiKeyStore(ctx.pool), repository)
    cache = CachingAuthenticator(
        LocalAuthenticator(CredentialResolver(sessions, keys)),
        settings.auth_cache_ttl_seconds,
        max_entries=settings.auth_cache_max_entries,
    )
    ctx.authenticator = cache
    ctx.service_principals = sessions.service_principal
    servicer = UserServicer(
        repository=repository,
        sessions=sessions,
        passwords=passwords,
        activity=recorder,
        usage=usage,
        purger=purger,
        settings=settings,
        cache=cache,
        keys=keys,
    )
    sweeper = Sweeper(repository, settings, purger)
    await ensure_bootstrap_admin(repository, passwords, settings)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_UserServiceServicer_to_server(servicer, server)

    return ServiceInstance(
        name="users",
        service_names=[SERVICE_NAME],
        register=register,
        requires=[DATABASE],
        public_methods=PUBLIC_METHODS,
        background=[sweeper.loop],
    )
