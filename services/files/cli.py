"""``mediagrid files upload|download|ls``: the FileService from a terminal (typer + rich)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console(stderr=True)
files_app = typer.Typer(help="Upload, download and list files.", no_args_is_help=True)

ADDRESS = typer.Option(
    "127.0.0.1:50051",
    "--address",
    envvar="MEDIAGRID_FILES_ADDRESS",
    help="host:port of the files service",
)
TOKEN = typer.Option(None, "--token", envvar="MEDIAGRID_TOKEN", help="bearer token")


def register(app: typer.Typer) -> None:
    app.add_typer(files_app, name="files")


def _client(address: str, token: str | None):  # type: ignore[no-untyped-def]
    from services.files.client import FilesClient, open_channel

    channel = open_channel(address)
    return channel, FilesClient(channel, token=token)


def _fail(exc: Exception) -> typer.Exit:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    else:
        console.print(f"[red]error[/red]: {exc}")
    return typer.Exit(1)


@files_app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    name: str = typer.Option(None, "--name", help="display name (default: the file's name)"),
    content_type: str = typer.Option(None, "--content-type"),
    job: str = typer.Option("", "--job", help="jobs/{job} this file belongs to"),
    parent: str = typer.Option("", "--parent", help="files/{file} to add a version to"),
    address: str = ADDRESS,
    token: str = TOKEN,
) -> None:
    """Upload PATH with a progress bar; a broken connection resumes by itself."""

    async def run() -> None:
        from services.files.client import UploadProgress

        size = (await asyncio.to_thread(path.stat)).st_size
        channel, client = _client(address, token)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(path.name, total=size)

            def show(p: UploadProgress) -> None:
                stored = f"stored {p.committed_bytes / 2**20:.0f} MiB, {p.parts_completed} parts"
                bar.update(task, completed=p.received_bytes, description=f"{path.name} ({stored})")

            try:
                file = await client.upload(
                    path,
                    display_name=name,
                    content_type=content_type,
                    job=job,
                    parent=parent,
                    on_progress=show,
                )
            finally:
                await channel.close()
        console.print(
            f"[green]uploaded[/green] {file.name} ({file.size_bytes} bytes, sha256 {file.sha256})"
        )
        typer.echo(file.name)

    try:
        asyncio.run(run())
    except Exception as exc:
        raise _fail(exc) from None


@files_app.command("download")
def download(
    name: str = typer.Argument(..., help="files/{file}"),
    dest: Path = typer.Argument(..., help="where to write it"),
    version: str = typer.Option("", "--version", help="an S3 version id (default: current)"),
    address: str = ADDRESS,
    token: str = TOKEN,
) -> None:
    """Download NAME into DEST (verifying its SHA-256)."""

    async def run() -> None:
        channel, client = _client(address, token)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(name, total=None)
            try:
                file = await client.download(
                    name,
                    dest,
                    version=version,
                    on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            finally:
                await channel.close()
        console.print(f"[green]downloaded[/green] {file.name} -> {dest} ({file.size_bytes} bytes)")

    try:
        asyncio.run(run())
    except Exception as exc:
        raise _fail(exc) from None


@files_app.command("ls")
def ls(
    user: str = typer.Option("", "--user", help="users/{user} (default: you)"),
    job: str = typer.Option("", "--job"),
    content_type: str = typer.Option("", "--type", help="content-type prefix, e.g. video/"),
    address: str = ADDRESS,
    token: str = TOKEN,
) -> None:
    """List files, newest first."""

    async def run() -> None:
        channel, client = _client(address, token)
        table = Table("name", "display name", "size", "type", "created")
        try:
            async for f in client.list(parent=user, job=job, content_type_prefix=content_type):
                table.add_row(
                    f.name,
                    f.display_name,
                    f"{f.size_bytes:,}",
                    f.content_type,
                    f.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                )
        finally:
            await channel.close()
        Console().print(table)

    try:
        asyncio.run(run())
    except Exception as exc:
        raise _fail(exc) from None
