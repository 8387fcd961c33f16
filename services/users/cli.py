"""``mediagrid login|logout`` and ``mediagrid users ...``: sessions, users, the retention sweep.

- ``login`` (top level) calls ``Login`` on a running server and stores the session for that
  address in the CLI's session file (``common/cli_session.py``), which later commands use
  when no ``--token`` is given; ``logout`` revokes that session and removes it.
- ``users login`` calls ``Login`` and prints only the token on stdout (for scripts).
- ``create`` talks to the database directly (it is how the first users of a fresh deployment
  are made; in dev without a database URL, the embedded PostgreSQL ``serve`` uses) unless
  ``--token`` is given, in which case it calls ``CreateUser`` on a running server as that
  caller.
- ``sweep`` runs one sweep pass against the database directly.
- ``service-token`` ensures a service account (with the internal job types it owns) in the
  database directly and prints a session token of it, for a process that does not serve the
  users service (``MEDIAGRID_SERVICE_TOKEN``, ``MEDIAGRID_WORKER_TOKEN``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import asyncpg
import grpc
import typer
from rich.console import Console

from common import cli_session
from common.channels import open_channel
from common.cli_support import address_option, connect, fail, rpc_fail, run, settings_or_exit
from common.context import Role
from common.settings import Settings
from services.users.models import SweepReport

console = Console(stderr=True)
users_app = typer.Typer(help="Users, sessions and retention.", no_args_is_help=True)

ROLES: tuple[Role, ...] = ("user", "admin", "service")


def _role(value: str) -> Role:
    for role in ROLES:
        if role == value:
            return role
    fail(f"--role must be one of {', '.join(ROLES)}", 2)


def _settings() -> Settings:
    return settings_or_exit(server_logs=False)


def _rpc_error(exc: grpc.aio.AioRpcError) -> NoReturn:
    fail(f"{exc.code().name}: {exc.details()}")


@users_app.command()
def create(
    email: str = typer.Option(..., help="Email address (unique, case-insensitive)."),
    role: str = typer.Option("user", help="user, admin or service."),
    display_name: str = typer.Option("", help="Name shown to people."),
    password: str = typer.Option(
        "", help="Password (prompted when omitted; service users may have none).", hide_input=True
    ),
    token: str = typer.Option(
        "", envvar="MEDIAGRID_TOKEN", help="Admin token: create through a running server instead."
    ),
    address: str | None = typer.Option(None, help="Server address for --token (host:port)."),
) -> None:
    """Create a user (directly in the database, or over gRPC with --token)."""
    checked = _role(role)
    if not password and checked != "service":
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if token:
        target, _ = connect("users", address, token)
        name = run(_create_remote(target, token, email, checked, display_name, password))
    else:
        name = run(_create_direct(_settings(), email, checked, display_name, password))
    console.print(f"created {name}")
    typer.echo(name)


async def _create_direct(
    settings: Settings, email: str, role: Role, display_name: str, password: str
) -> str:
    from common.errors import DomainError
    from common.registry import resolve
    from common.runtime import migrate_all
    from services.users.accounts import Accounts
    from services.users.activity import SYSTEM_ACTOR, DatabaseActivityRecorder
    from services.users.passwords import Passwords
    from services.users.repository import UserRepository

    async with _database(settings) as pool:
        await migrate_all(pool, resolve(["users"]))
        repository = UserRepository(pool)
        accounts = Accounts(repository, Passwords.from_settings(settings), settings)
        try:
            user = await accounts.create_user(
                email=email, display_name=display_name, role=role, password=password
            )
        except DomainError as exc:
            fail(f"{exc.reason}: {exc.message}")
        await DatabaseActivityRecorder(repository).record(
            "users.create", user.name, {"role": user.role, "via": "cli"}, actor=SYSTEM_ACTOR
        )
        return user.name


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the configured database, or (dev/test, none configured) the embedded one."""
    from common import db
    from common.embedded import embedded_dependencies

    async with embedded_dependencies(settings, s3=False) as effective:
        pool = await db.create_pool(effective)
        try:
            yield pool
        finally:
            await pool.close()


async def _create_remote(
    address: str, token: str, email: str, role: Role, display_name: str, password: str
) -> str:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    from services.users import convert

    async with open_channel(address) as channel:
        try:
            response = await pb_grpc.UserServiceStub(channel).CreateUser(
                pb.CreateUserRequest(
                    user=pb.User(
                        email=email, display_name=display_name, role=convert.ROLE_TO_PROTO[role]
                    ),
                    password=password,
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            _rpc_error(exc)
    return str(response.user.name)


@users_app.command("login")
def users_login(
    email: str = typer.Option(..., help="Email address."),
    password: str = typer.Option("", help="Password (prompted when omitted).", hide_input=True),
    address: str | None = address_option(),
) -> None:
    """Log in and print the session token (only) on stdout; nothing is stored."""
    password = password or os.environ.get("MEDIAGRID_PASSWORD") or ""
    if not password:
        password = typer.prompt("Password", hide_input=True)
    target, _ = connect("users", address, None)
    response = run(_login(target, email, password))
    console.print(f"logged in: {response.session.name}")
    typer.echo(response.token)


def login(
    email: str = typer.Option(None, help="Email address (prompted when omitted)."),
    password: str = typer.Option(
        "", help="Password (default MEDIAGRID_PASSWORD, else prompted).", hide_input=True
    ),
    address: str | None = address_option(),
) -> None:
    """Log in and keep the session for later commands (in a file only you can read)."""
    if not email:
        email = typer.prompt("Email")
    password = password or os.environ.get("MEDIAGRID_PASSWORD") or ""
    if not password:
        password = typer.prompt("Password", hide_input=True)
    target, _ = connect("users", address, None)
    response = run(_login(target, email, password))
    stored = cli_session.StoredSession(
        token=response.token,
        session=response.session.name,
        user=response.user.name,
        email=response.user.email,
    )
    where = cli_session.store_session(target, stored)
    console.print(
        f"logged in to {target} as {stored.email} ({stored.user}); session kept in {where}",
        highlight=False,
    )


def logout(address: str | None = address_option()) -> None:
    """Revoke the session `mediagrid login` stored for the server and forget it."""
    target, _ = connect("users", address, None)
    stored = cli_session.stored_session(target)
    if stored is None:
        console.print(f"not logged in to {target}", highlight=False)
        return
    try:
        run(_logout(target, stored.token))
    except typer.Exit:
        # The server is unreachable or already forgot the session: forget it here too.
        console.print("the server did not revoke the session; removing it here anyway")
    cli_session.forget_session(target)
    console.print(f"logged out of {target} ({stored.email})", highlight=False)


async def _login(address: str, email: str, password: str) -> Any:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    async with open_channel(address) as channel:
        try:
            return await pb_grpc.UserServiceStub(channel).Login(
                pb.LoginRequest(email=email, password=password), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            rpc_fail(exc, address)


async def _logout(address: str, token: str) -> None:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    async with open_channel(address) as channel:
        try:
            await pb_grpc.UserServiceStub(channel).Logout(
                pb.LogoutRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # already expired or revoked
                rpc_fail(exc, address)


@users_app.command()
def sweep() -> None:
    """Run one retention sweep (sessions, activity, login throttles, pending purges)."""
    settings = _settings()
    report = run(_sweep(settings))
    typer.echo(report.model_dump_json())


async def _sweep(settings: Settings) -> SweepReport:
    from common import db
    from common.app import AppContext
    from common.aws import AwsClients
    from services.users import app
    from services.users.repository import UserRepository
    from services.users.sweep import Sweeper

    async with _database(settings) as pool:
        ctx = AppContext(
            settings=settings, pool=db.SuitePool(pool, settings), aws=AwsClients(settings)
        )
        return await Sweeper(UserRepository(ctx.pool), settings, app.data_purger(ctx)).run_once()


@users_app.command("service-token")
def service_token(
    email: str = typer.Option(..., help="Email of the service account (created when absent)."),
    job_type: list[str] = typer.Option(
        [], help="Internal job type the account owns (repeatable), e.g. video.probe."
    ),
) -> None:
    """Ensure a service account and its job-type grants; print a new session token of it."""
    typer.echo(run(_service_token(_settings(), email, job_type)))


async def _service_token(settings: Settings, email: str, job_types: list[str]) -> str:
    from common import db
    from common.app import AppContext
    from common.auth import job_type_grant
    from common.aws import AwsClients
    from common.errors import DomainError
    from common.registry import resolve
    from common.runtime import migrate_all
    from services.users.bootstrap import issue_service_token

    async with _database(settings) as pool:
        await migrate_all(pool, resolve(["users"]))
        ctx = AppContext(
            settings=settings, pool=db.SuitePool(pool, settings), aws=AwsClients(settings)
        )
        grants = [job_type_grant(job_type) for job_type in job_types]
        try:
            return await issue_service_token(ctx, email, grants)
        except DomainError as exc:
            fail(f"{exc.reason}: {exc.message}")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.add_typer(users_app, name="users")
    from services.users.api_keys_cli import api_keys_app

    app.add_typer(api_keys_app, name="api-keys")
