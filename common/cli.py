"""The ``mediagrid`` command line: serve, migrate, check, plus each service's own commands.

A service adds commands by providing ``services/<name>/cli.py`` with ``register(app)``
(shared helpers in ``common/cli_support.py``). Client commands (files, videos, users, health,
login) find the server and a token through ``cli_support.connect`` (see
``common/cli_session.py``). Results go to stdout, everything else to stderr. The CLI logs
to stderr as text, warnings only unless ``-v``; only the long-running ``serve`` and
``worker`` log as the settings say (``MEDIAGRID_LOG_FORMAT``, ``MEDIAGRID_LOG_LEVEL``).

Exit codes: 0 success; 1 a dependency failed (database unreachable, check failed, a
migration error); 2 invalid configuration or arguments (the message names the variable);
130 stopped by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from common.channels import open_channel
from common.cli_support import (
    address_option,
    connect,
    console,
    fail,
    run,
    settings_or_exit,
)
from common.logging import TextFormatter
from common.settings import Settings

app = typer.Typer(
    help="mediagrid: files, jobs and users over gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="Log more on stderr: -v info, -vv debug."
    ),
) -> None:
    """mediagrid: files, jobs and users over gRPC."""
    handler = logging.StreamHandler()  # stderr: stdout carries only results
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG)


def _service_names(services: list[str] | None) -> list[str]:
    """The requested services (default all); unknown names exit 2 before anything starts."""
    from common.registry import resolve

    names = services or ["all"]
    try:
        resolve(names)
    except ValueError as exc:
        fail(str(exc), 2)
    return names


@app.command()
def serve(
    services: list[str] = typer.Argument(None, help="users, jobs, files or all (default all)"),
) -> None:
    """Start services in this process (embedded PostgreSQL/S3 when none is configured)."""
    from common.launcher import serve_forever
    from common.server import SuiteServer

    settings = settings_or_exit()

    def ready(server: SuiteServer, effective: Settings) -> None:
        from common import gc_tuning

        gc_tuning.tune(settings.gc_gen0_threshold)  # start-up is over: freeze what it built
        names = ", ".join(server.service_names) or "(no services: health and reflection only)"
        console.print(
            f"[bold green]mediagrid listening on {server.address}[/bold green] serving {names}",
            highlight=False,
        )
        if settings.s3_is_embedded and settings.embedded_s3 == "moto":
            console.print(
                "[yellow]S3 is embedded moto, in memory: stored objects are lost on exit.[/yellow]"
            )
        elif settings.s3_is_embedded:
            console.print(
                f"embedded S3: SeaweedFS at {effective.s3_endpoint_url}, data in "
                f"{settings.data_dir / 's3'}",
                highlight=False,
            )

    run(serve_forever(settings, _service_names(services), on_ready=ready))


@app.command()
def migrate(services: list[str] = typer.Argument(None, help="default: all")) -> None:
    """Apply pending migrations of the given services."""
    from common.launcher import migrate_only

    settings = settings_or_exit(server_logs=False)
    applied = run(migrate_only(settings, _service_names(services)))
    for name, versions in applied.items():
        done = ", ".join(f"{v:03d}" for v in versions) if versions else "nothing (up to date)"
        console.print(f"{name}: applied {done}", highlight=False)


@app.command()
def check() -> None:
    """Check settings, database, migrations and buckets; exit 1 naming what is wrong."""
    from common.check import run_checks

    settings = settings_or_exit(server_logs=False)
    results = run(run_checks(settings))
    table = Table(title="mediagrid check")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for result in results:
        mark = "[green]ok[/green]" if result.ok else "[red]FAIL[/red]"
        table.add_row(result.name, mark, result.detail)
    out = Console()
    # Piped output (CI logs, grep) gets a wide table instead of one wrapped at 80 columns.
    (out if out.is_terminal else Console(width=200)).print(table)
    failures = [r for r in results if not r.ok]
    if failures:
        for failure in failures:
            console.print(f"[red]{failure.name}:[/red] {failure.detail}", highlight=False)
        raise typer.Exit(1)


@app.command()
def provision(
    environment: str = typer.Option(
        None, help="dev, test, staging or prod (default: MEDIAGRID_ENVIRONMENT)"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would change; change nothing."
    ),
) -> None:
    """Create or correct the environment's buckets in place (versioning, encryption,
    lifecycle rules, public access block, TLS-only policy); a second run changes nothing."""
    from common.provision import provision as provision_buckets
    from common.settings import BUCKET_PURPOSES, Environment

    settings = settings_or_exit(server_logs=False)
    if environment is not None:
        try:
            settings = settings.model_copy(update={"environment": Environment(environment)})
        except ValueError:
            fail(f"--environment must be one of {', '.join(e.value for e in Environment)}", 2)
    changes = run(provision_buckets(settings, dry_run=dry_run))
    for change in changes:
        typer.echo(str(change))
    if not changes:
        names = ", ".join(settings.bucket(p) for p in BUCKET_PURPOSES)
        typer.echo(f"{names}: nothing to change")


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    import os

    settings = settings_or_exit(server_logs=False)
    table = Table(title="mediagrid settings")
    table.add_column("variable")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    # mode="json" renders SecretStr as "**********": the values shown are safe to paste.
    values = settings.model_dump(mode="json")
    for name in Settings.model_fields:
        variable = f"MEDIAGRID_{name.upper()}"
        source = "environment" if variable in os.environ else "default or .env"
        table.add_row(variable, "unset" if values[name] is None else str(values[name]), source)
    out = Console()
    (out if out.is_terminal else Console(width=200)).print(table)


@app.command()
def health(
    address: str | None = address_option(),
    service: str = typer.Option("", help="a fully qualified service name; empty = overall"),
    timeout: float = typer.Option(5.0, help="seconds to wait for the answer"),
) -> None:
    """Ask a running server's grpc.health.v1 service; exit 0 only when SERVING.

    Used as the container health check (Docker, ECS).
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target, _ = connect(None, address, None)

    async def ask() -> str:
        async with open_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = await stub.Check(request, timeout=timeout)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    try:
        status = asyncio.run(ask())
    except grpc.RpcError as exc:
        fail(f"{target}: {exc.code().name}: {exc.details()}")
    typer.echo(f"{target} {service or '(overall)'}: {status}")
    if status != "SERVING":
        raise typer.Exit(1)


@app.command("dev-certs")
def dev_certs(
    directory: Path = typer.Option(
        Path(".mediagrid/certs"), "--dir", help="where the CA and certificates are written"
    ),
    client: list[str] = typer.Option(
        ["worker"], "--client", help="a client certificate with this subject CN (repeatable)"
    ),
    host: list[str] = typer.Option(
        ["127.0.0.1", "localhost"], "--host", help="a name or IP the server certificate covers"
    ),
) -> None:
    """Make a local CA, a server certificate and client certificates for trying TLS/mTLS.

    An existing CA in the directory is reused (certificates it signed stay valid)."""
    from common.tls import dev_certificates

    written = dev_certificates(directory, client, hosts=host)
    for name, (cert, key) in written.items():
        typer.echo(f"{name}: {cert} (key {key})")
    server_cert, server_key = written["server"]
    ca, _ = written["ca"]
    typer.echo(
        "\nserve with mutual TLS:\n"
        f"  MEDIAGRID_TLS_CERT_FILE={server_cert} MEDIAGRID_TLS_KEY_FILE={server_key} "
        f"MEDIAGRID_TLS_CA_FILE={ca} MEDIAGRID_TLS_REQUIRE_CLIENT_CERT=true mediagrid serve",
        err=True,
    )


def _register_service_commands() -> None:
    from services.files import cli as files_cli
    from services.files.video import cli as video_cli
    from services.jobs import cli as jobs_cli
    from services.migration import cli as legacy_cli
    from services.users import cli as users_cli

    for module in (users_cli, jobs_cli, files_cli, video_cli, legacy_cli):
        module.register(app)


_register_service_commands()


def main() -> None:
    app()
