"""``mediagrid users ...``: create users, log in, run the retention sweep.

- ``create`` talks to the database directly (it is how the first users of a fresh deployment
  are made) unless ``--token`` is given, in which case it calls ``CreateUser`` on a running
  server as that caller.
- ``login`` calls ``Login`` on a running server and prints only the token on stdout.
- ``sweep`` runs one sweep pass against the database directly.
- ``service-token`` ensures a service account (with the internal job types it owns) in the
  database directly and prints a session token of it, for a process that does not serve the
  users service (``MEDIAGRID_SERVICE_TOKEN``, ``MEDIAGRID_WORKER_TOKEN``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import grpc
import typer
from rich.console import Console

from common.cli import fail, run, settings_or_exit
from common.server import host_port
from common.settings import Settings
from services.users.models import SweepReport

console = Console(stderr=True)
users_app = typer.Typer(help="Users, sessions and retention.", no_args_is_help=True)

ROLES = ("user", "admin", "service")


def _settings() -> Settings:
    return settings_or_exit()


def _address(settings: Settings, address: str | None) -> str:
    return address or settings.users_address or host_port(settings.grpc_host, settings.grpc_port)


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
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}", 2)
    if not password and role != "service":
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _settings()
    if token:
        name = run(
            _create_remote(_address(settings, address), token, email, role, display_name, password)
        )
    else:
        name = run(_create_direct(settings, email, role, display_name, password))
    console.print(f"created {name}")
    typer.echo(name)


async def _create_direct(
    settings: Settings, email: str, role: str, display_name: str, password: str
) -> str:
    from common import db
    from common.errors import DomainError
    from common.registry import resolve
    from common.runtime import migrate_all
    from services.users import convert
    from services.users.activity import SYSTEM_ACTOR, DatabaseActivityRecorder
    from services.users.passwords import Passwords
    from services.users.purge import MissingServicesPurger
    from services.users.repository import UserRepository
    from services.users.servicer import UserServicer
    from services.users.sessions import SessionManager
    from services.users.usage import MissingServicesUsageSource

    pool = await db.create_pool(settings)
    try:
        await migrate_all(pool, resolve(["users"]))
        repository = UserRepository(pool)
        passwords = Passwords.from_settings(settings)
        recorder = DatabaseActivityRecorder(repository)
        servicer = UserServicer(
            repository=repository,
            sessions=SessionManager(repository, settings, passwords),
            passwords=passwords,
            activity=recorder,
            usage=MissingServicesUsageSource(),
            purger=MissingServicesPurger(),
            settings=settings,
        )
        try:
            user = await servicer.create_user(
                email=email,
                display_name=display_name,
                role_value=convert.ROLE_TO_PB[role],
                password=password,
            )
        except DomainError as exc:
            fail(f"{exc.reason}: {exc.message}")
        await recorder.record(
            "users.create", user.name, {"role": user.role, "via": "cli"}, actor=SYSTEM_ACTOR
        )
        return user.name
    finally:
        await pool.close()


async def _create_remote(
    address: str, token: str, email: str, role: str, display_name: str, password: str
) -> str:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    from services.users import convert

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await pb_grpc.UserServiceStub(channel).CreateUser(
                pb.CreateUserRequest(
                    user=pb.User(
                        email=email, display_name=display_name, role=convert.ROLE_TO_PB[role]
                    ),
                    password=password,
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            _rpc_error(exc)
    return str(response.user.name)


@users_app.command()
def login(
    email: str = typer.Option(..., help="Email address."),
    password: str = typer.Option("", help="Password (prompted when omitted).", hide_input=True),
    address: str | None = typer.Option(None, help="Server address (host:port)."),
) -> None:
    """Log in through a running server and print the session token (only) on stdout."""
    if not password:
        password = os.environ.get("MEDIAGRID_PASSWORD") or typer.prompt("Password", hide_input=True)
    settings = _settings()
    token, session = run(_login(_address(settings, address), email, password))
    console.print(f"logged in: {session}")
    typer.echo(token)


async def _login(address: str, email: str, password: str) -> tuple[str, str]:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await pb_grpc.UserServiceStub(channel).Login(
                pb.LoginRequest(email=email, password=password), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            _rpc_error(exc)
    return response.token, response.session.name


@users_app.command()
def sweep() -> None:
    """Run one retention sweep (sessions, activity, login throttles, pending purges)."""
    settings = _settings()
    report = run(_sweep(settings))
    typer.echo(report.model_dump_json())


async def _sweep(settings: Settings) -> SweepReport:
    from common import db
    from services.users import app
    from services.users.repository import UserRepository
    from services.users.sweep import Sweeper

    pool = await db.create_pool(settings)
    try:
        from common.app import AppContext
        from common.aws import AwsClients

        ctx = AppContext(
            settings=settings, pool=db.SuitePool(pool, settings), aws=AwsClients(settings)
        )
        return await Sweeper(UserRepository(ctx.pool), settings, app.data_purger(ctx)).run_once()
    finally:
        await pool.close()


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

    pool = await db.create_pool(settings)
    try:
        await migrate_all(pool, resolve(["users"]))
        ctx = AppContext(
            settings=settings, pool=db.SuitePool(pool, settings), aws=AwsClients(settings)
        )
        grants = [job_type_grant(job_type) for job_type in job_types]
        try:
            return await issue_service_token(ctx, email, grants)
        except DomainError as exc:
            fail(f"{exc.reason}: {exc.message}")
    finally:
        await pool.close()


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
