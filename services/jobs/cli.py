"""``mediagrid worker``: job handlers that claim work from the jobs service over gRPC."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        types: str = typer.Option(
            "",
            "--types",
            help="Comma-separated job types to run (default: every declared type with a handler).",
        ),
        concurrency: int = typer.Option(0, "--concurrency", help="Handlers at once (0 = setting)."),
        address: str = typer.Option(
            "",
            "--address",
            help="Jobs service host:port (default: MEDIAGRID_JOBS_ADDRESS, else GRPC_HOST:PORT).",
        ),
        token: str = typer.Option(
            "", "--token", help="Bearer token (default MEDIAGRID_WORKER_TOKEN).", show_default=False
        ),
        api_key: str = typer.Option(
            "",
            "--api-key",
            help="API key of a service user (default MEDIAGRID_WORKER_API_KEY).",
            show_default=False,
        ),
        worker_id: str = typer.Option("", "--worker-id", help="Worker id (default host-pid-rand)."),
    ) -> None:
        """Run job handlers: claim jobs over gRPC until SIGTERM, then stop gracefully.

        Logs and telemetry are set up from the settings exactly as for ``serve``."""
        from common import gc_tuning
        from common.cli_session import server_address
        from common.cli_support import settings_or_exit
        from common.settings import ConfigurationError
        from common.telemetry import configure_telemetry
        from services.jobs.worker.main import run_worker, runnable_types
        from services.jobs.worker.runtime import UnknownJobType

        if token and api_key:
            console.print("[red]give --token or --api-key, not both[/red]")
            raise typer.Exit(2)
        settings = settings_or_exit(server_logs=True)
        gc_tuning.tune(settings.gc_gen0_threshold)
        telemetry = configure_telemetry(settings)
        try:
            wanted = [t.strip() for t in types.split(",") if t.strip()]
            asyncio.run(
                run_worker(
                    settings,
                    types=wanted or runnable_types(settings),
                    concurrency=concurrency or None,
                    address=server_address(settings, "jobs", address or None),
                    token=api_key or token or None,
                    worker_id=worker_id or None,
                )
            )
        except (UnknownJobType, ConfigurationError) as exc:
            # A bad job type declaration surfaces while the runtime loads the registry.
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        finally:
            telemetry.shutdown()
