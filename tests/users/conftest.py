"""Fixtures of the users tests: a users suite with helpers to add users and sessions cheaply.

Argon2id at OWASP's minimum costs tens of milliseconds per hash, so users whose password is
not under test are inserted through the repository, and the one password hash the tests need
is computed once per session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

from common.app import AppContext
from common.settings import Settings
from services.users.models import User
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def password_hash() -> str:
    """The Argon2id hash of PASSWORD at the default (minimum) parameters, computed once."""
    import asyncio

    return asyncio.run(Passwords(memory_kib=19 * 1024, time_cost=2, parallelism=1).hash(PASSWORD))


@dataclass
class UsersEnv:
    """A running users service and shortcuts around it."""

    server: Any
    ctx: AppContext
    channel: grpc.aio.Channel
    stub: pb_grpc.UserServiceStub
    repository: UserRepository
    sessions: SessionManager
    settings: Settings
    password_hash: str
    _counter: int = 0

    async def add_user(
        self, role: str = "user", *, email: str | None = None, with_password: bool = False
    ) -> User:
        self._counter += 1
        return await self.repository.create_user(
            email=email or f"{role}{self._counter}@example.com",
            display_name=f"{role} {self._counter}",
            role=role,
            password_hash=self.password_hash if with_password else None,
        )

    async def token(self, user: User) -> str:
        token, _ = await self.sessions.open_session(user.id)
        return token

    async def user_with_token(self, role: str = "user", **kwargs: Any) -> tuple[User, str]:
        user = await self.add_user(role, **kwargs)
        return user, await self.token(user)


async def start_users(suite: Callable[..., Any], password_hash: str, **overrides: Any) -> UsersEnv:
    server, ctx, channel = await suite("users", **overrides)
    repository = UserRepository(ctx.pool)
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    return UsersEnv(
        server=server,
        ctx=ctx,
        channel=channel,
        stub=pb_grpc.UserServiceStub(channel),
        repository=repository,
        sessions=sessions,
        settings=ctx.settings,
        password_hash=password_hash,
    )


@pytest_asyncio.fixture
async def users(suite: Callable[..., Any], password_hash: str) -> AsyncIterator[UsersEnv]:
    yield await start_users(suite, password_hash)


class FakeUsage:
    """An in-test UsageSource with fixed figures."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def job_counts(self, user: str) -> dict[str, int]:
        self.asked.append(user)
        return {"JOB_STATE_SUCCEEDED": 3, "JOB_STATE_FAILED": 1}

    async def file_usage(self, user: str) -> Any:
        from services.users.usage import FileUsage

        return FileUsage(file_count=2, total_bytes=2048)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_users(
    pg_admin_dsn: str, template_db: str, password_hash: str
) -> AsyncIterator[UsersEnv]:
    """One users service (own database, fake usage source) shared by a module's many cases."""
    import uuid

    import asyncpg

    from common.runtime import running_suite
    from services.users import app
    from tests.support.stores import with_database

    name = f"mg_users_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    dsn = with_database(pg_admin_dsn, name)
    settings = Settings(
        environment="test",
        database_url=dsn,
        grpc_port=0,
        grpc_shutdown_grace_seconds=1,
        log_format="text",
        db_pool_max_size=20,
    )
    usage = FakeUsage()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "usage_source", lambda ctx: usage)
        async with running_suite(settings, ["users"], port=0) as (server, ctx):
            channel = grpc.aio.insecure_channel(server.address)
            repository = UserRepository(ctx.pool)
            try:
                yield UsersEnv(
                    server=server,
                    ctx=ctx,
                    channel=channel,
                    stub=pb_grpc.UserServiceStub(channel),
                    repository=repository,
                    sessions=SessionManager(
                        repository, settings, Passwords.from_settings(settings)
                    ),
                    settings=settings,
                    password_hash=password_hash,
                )
            finally:
                await channel.close()
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
