"""Helpers every ``mediagrid`` command module shares: failing with an exit code, running a
command's coroutine, loading settings, and finding the server and token of client commands.

Kept apart from ``common/cli.py`` (which builds the app and registers every service's
commands) so that a service's ``cli.py`` can be imported on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from common import cli_session
from common.errors import DomainError
from common.logging import configure_logging
from common.migrations import MigrationError
from common.settings import ConfigurationError, Settings, load_settings

# soft_wrap: messages stay on one line (greppable, and tests match them whole).
console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    raise typer.Exit(code)


def connect(service: str | None, address: str | None, token: str | None) -> tuple[str, str | None]:
    """(address, token) of a client command; exit 2 naming a bad setting."""
    try:
        settings = cli_session.client_settings()
    except ConfigurationError as exc:
        fail(str(exc), 2)
    target = cli_session.server_address(settings, service, address)
    if settings.telemetry_exporter != "off":
        _trace_command()
    return target, cli_session.resolve_token(target, token)


def _trace_command() -> None:
    """Export this command's spans (its calls join the server's traces) as ``serve`` does;
    flushed at exit. Only when telemetry is configured: it costs the OpenTelemetry imports."""
    import atexit

    from common.telemetry import active, configure_telemetry

    if active() is not None:
        return
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        console.print(f"telemetry off for this command: {exc}", highlight=False)
        return
    traced = settings.model_copy(update={"metrics_exporter": "off"})  # spans only
    atexit.register(configure_telemetry(traced).shutdown)


def rpc_fail(exc: Exception, address: str = "") -> NoReturn:
    """Exit 1 with the status of a failed call (and what to do for the usual ones)."""
    import grpc

    if not isinstance(exc, grpc.aio.AioRpcError):
        fail(str(exc))
    from common.grpc_errors import error_info

    code = exc.code()
    message = f"{code.name}: {exc.details()}"
    info = error_info(exc)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        message += " (log in with `mediagrid login`, or pass --token / MEDIAGRID_TOKEN)"
    elif code == grpc.StatusCode.UNAVAILABLE and info is not None:
        # The server answered: one of its dependencies is down, not the server itself.
        message += f" [{info.reason}]"
    elif code == grpc.StatusCode.UNAVAILABLE and address:
        message += (
            f" (is a server running at {address}? `mediagrid serve` starts one; "
            "MEDIAGRID_GRPC_PORT or --address pick another)"
        )
    fail(message)


SIGINT_EXIT = 130  # what shells report for a command stopped by Ctrl-C


def run_client(coroutine: Coroutine[Any, Any, T], address: str) -> T:
    """Run a client command's coroutine against ``address``: a failed call (or any other
    error) exits 1 with its status and what to do, Ctrl-C exits 130."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(SIGINT_EXIT) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a refused call, an unreadable file, a lost connection
        rpc_fail(exc, address)


ADDRESS_HELP = "host:port (default: the MEDIAGRID_*_ADDRESS setting, else GRPC_HOST:GRPC_PORT)"
TOKEN_HELP = "bearer token (default: the session `mediagrid login` stored for the address)"


def address_option() -> Any:
    return typer.Option(None, "--address", help=ADDRESS_HELP, show_default=False)


def token_option() -> Any:
    return typer.Option(
        None, "--token", envvar="MEDIAGRID_TOKEN", help=TOKEN_HELP, show_default=False
    )


def settings_or_exit(*, server_logs: bool = True) -> Settings:
    """Load and validate settings; exit 2 naming the bad variable.

    ``server_logs``: log as the settings say (format, level), as a serving process does;
    False keeps the CLI's own logging (text, warnings unless ``-v``) for one-shot commands.
    """
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        fail(str(exc), 2)
    if server_logs:
        configure_logging(settings)
    return settings


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning expected failures into a message and exit code."""
    try:
        return asyncio.run(coroutine)
    except ConfigurationError as exc:
        fail(str(exc), 2)
    except DomainError as exc:  # e.g. Unavailable: the database did not answer
        fail(str(exc))
    except MigrationError as exc:
        fail(f"migration failed: {exc}")
    except OSError as exc:  # e.g. the gRPC port is taken (SuiteServer.start raises OSError)
        fail(f"{exc} (set MEDIAGRID_GRPC_PORT to use another port)")
