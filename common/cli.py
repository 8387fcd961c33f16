"""The ``mediagrid`` command line: serve, migrate, check, plus each service's own commands.

A service adds commands by providing ``services/<name>/cli.py`` with ``register(app)``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

import typer
from rich.console import Console

from common.settings import ConfigurationError, Settings, load_settings

app = typer.Typer(help="mediagrid: files, jobs and users over gRPC.", no_args_is_help=True)
console = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(
    services: list[str] = typer.Argument(None, help="users, jobs, files or all (default all)"),
) -> None:
    """Start services in this process (embedded PostgreSQL/S3 when none is configured)."""
    from common.launcher import serve_forever

    settings = settings_or_exit()
    asyncio.run(serve_forever(settings, services or ["all"]))


@app.command()
def migrate(services: list[str] = typer.Argument(None, help="default: all")) -> None:
    """Apply pending migrations of the given services."""
    from common.launcher import migrate_only

    settings = settings_or_exit()
    applied = asyncio.run(migrate_only(settings, services or ["all"]))
    for name, versions in applied.items():
        console.print(f"{name}: applied {versions or 'nothing (up to date)'}")


def _register_service_commands() -> None:
    for name in ("users", "jobs", "files"):
        try:
            module = importlib.import_module(f"services.{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{name}.cli":
                raise
            continue
        module.register(app)


_register_service_commands()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    app()
