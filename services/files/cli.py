"""``mediagrid files upload|download|ls|uploads``: the FileService from a terminal.

Uploads of a local file resume across runs: the session is recorded in the CLI's resume
store (``$XDG_STATE_HOME/mediagrid/uploads.json``, see ``services/files/resume.py``), so
running the same command again after Ctrl-C, a crash or a lost connection continues from
the committed offset. ``files uploads`` lists those unfinished sessions and cancels one.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
import typer
from google.protobuf.message import Message
from mediagrid.files.v1 import file_pb2, file_service_pb2
from rich.table import Table

from common.cli_output import (
    OUTPUT,
    Output,
    binary_size,
    emit,
    name_table,
    stderr,
    transfer_progress,
    when,
)
from common.cli_session import state_dir
from common.cli_support import (
    SIGINT_EXIT,
    address_option,
    connect,
    rpc_fail,
    run_client,
    token_option,
)
from services.files.client import FilesClient, UploadProgress, open_channel
from services.files.resume import JsonResumeStore

files_app = typer.Typer(help="Upload, download and list files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(files_app, name="files")


def resume_store() -> JsonResumeStore:
    return JsonResumeStore(state_dir() / "uploads.json")


def _client(address: str, token: str | None) -> tuple[grpc.aio.Channel, FilesClient]:
    channel = open_channel(address)
    return channel, FilesClient(channel, token=token, server=address)


def file_table(files: Sequence[Message]) -> Table:
    table = name_table("name", "display name", "size", "type", "created")
    for f in files:
        assert isinstance(f, file_pb2.File)
        table.add_row(
            f.name, f.display_name, binary_size(f.size_bytes), f.content_type, when(f.create_time)
        )
    return table


@dataclass
class _Seen:
    """What an upload reached, for the message after Ctrl-C."""

    upload: str = ""
    committed: int = 0


def run_upload(
    path: Path,
    *,
    address: str,
    token: str | None,
    video: bool = False,
    resume: bool = True,
    **fields: str | None,
) -> file_pb2.File:
    """Upload ``path`` with a progress bar; Ctrl-C says how to resume or cancel, exits 130."""
    seen = _Seen()
    store = resume_store() if resume else None

    async def transfer() -> file_pb2.File:
        size = (await asyncio.to_thread(path.stat)).st_size
        channel, client = _client(address, token)
        with transfer_progress() as bar:
            task = bar.add_task(f"{path.name}: hashing", total=size)

            def show(p: UploadProgress) -> None:
                if not seen.upload:
                    if p.received_bytes:
                        stderr.print(
                            f"resuming {p.upload} at {binary_size(p.committed_bytes)}",
                            highlight=False,
                        )
                    seen.upload = p.upload
                seen.committed = p.committed_bytes
                if p.sending_done or p.received_bytes >= size:
                    # The server reports nothing more until it has stored the last parts:
                    # say so (the spinner keeps turning) instead of a bar stuck short of 100%.
                    description = f"{path.name}: storing the last parts in S3"
                    bar.update(task, completed=size, description=description)
                else:
                    bar.update(task, completed=p.received_bytes, description=path.name)

            try:
                uploaded: file_pb2.File = await client.upload(
                    path,
                    display_name=fields.get("name"),
                    content_type=fields.get("content_type"),
                    job=fields.get("job") or "",
                    parent=fields.get("parent") or "",
                    on_progress=show,
                    video=video,
                    resume=store,
                )
            finally:
                await channel.close()
            return uploaded

    try:
        file = asyncio.run(transfer())
    except KeyboardInterrupt:
        _interrupted(seen)
    except Exception as exc:  # a refused call, an unreadable file, a lost source
        rpc_fail(exc, address)
    stderr.print(
        f"[green]uploaded[/green] {file.name} ({binary_size(file.size_bytes)}, "
        f"sha256 {file.sha256})"
    )
    return file


def _interrupted(seen: _Seen) -> NoReturn:
    again = shlex.join(["mediagrid", *sys.argv[1:]])
    if seen.upload:
        stderr.print(
            f"\ninterrupted: {seen.upload} keeps {binary_size(seen.committed)} stored.\n"
            f"  resume: {again}\n"
            f"  cancel: mediagrid files uploads --cancel {seen.upload}",
            highlight=False,
        )
    else:
        stderr.print(f"\ninterrupted before any byte was sent this time; to upload: {again}")
    raise typer.Exit(SIGINT_EXIT)


@files_app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    name: str = typer.Option(None, "--name", help="display name (default: the file's name)"),
    content_type: str = typer.Option(None, "--content-type"),
    job: str = typer.Option("", "--job", help="jobs/{job} this file belongs to"),
    parent: str = typer.Option("", "--parent", help="files/{file} to add a version to"),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="continue an unfinished upload of this same file"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Upload PATH with a progress bar; prints the file's name.

    A broken connection resumes by itself; after Ctrl-C or a crash, run the same command
    again to continue from what the server already stored.
    """
    target, bearer = connect("files", address, token)
    file = run_upload(
        path,
        address=target,
        token=bearer,
        resume=resume,
        name=name,
        content_type=content_type,
        job=job,
        parent=parent,
    )
    if output is Output.table:
        typer.echo(file.name)  # the name alone: `NAME=$(mediagrid files upload x)` works
    else:
        emit([file], output, file_table, single=True)


@files_app.command("download")
def download(
    name: str = typer.Argument(..., help="files/{file}"),
    dest: Path = typer.Argument(..., help="where to write it"),
    version: str = typer.Option("", "--version", help="an S3 version id (default: current)"),
    address: str | None = address_option(),
    token: str | None = token_option(),
) -> None:
    """Download NAME into DEST (verifying its SHA-256)."""
    target, bearer = connect("files", address, token)

    async def run() -> file_pb2.File:
        channel, client = _client(target, bearer)
        with transfer_progress() as bar:
            task = bar.add_task(name, total=None)
            partial = dest.with_name(dest.name + ".part")
            try:
                file: file_pb2.File = await client.download(
                    name,
                    partial,
                    version=version,
                    on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
                await asyncio.to_thread(partial.replace, dest)  # only a verified file appears
            finally:
                await channel.close()
                await asyncio.to_thread(partial.unlink, True)
        return file

    file = run_client(run(), target)
    stderr.print(
        f"[green]downloaded[/green] {file.name} -> {dest} ({binary_size(file.size_bytes)})",
        highlight=False,
    )


@files_app.command("ls")
def ls(
    user: str = typer.Option("", "--user", help="users/{user} (default: you)"),
    job: str = typer.Option("", "--job"),
    content_type: str = typer.Option("", "--type", help="content-type prefix, e.g. video/"),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List files, newest first (full names; `-o names` for scripts)."""
    target, bearer = connect("files", address, token)

    async def run() -> list[file_pb2.File]:
        channel, client = _client(target, bearer)
        try:
            return [
                f async for f in client.list(parent=user, job=job, content_type_prefix=content_type)
            ]
        finally:
            await channel.close()

    files = run_client(run(), target)
    emit(files, output, file_table)


def upload_table(uploads: Sequence[Message], paths: dict[str, str]) -> Table:
    table = name_table("name", "state", "stored", "size", "local file")
    for u in uploads:
        assert isinstance(u, file_service_pb2.Upload)
        state = file_service_pb2.UploadState.Name(u.state).removeprefix("UPLOAD_STATE_").lower()
        size = binary_size(u.size_bytes) if u.size_bytes else "?"
        table.add_row(
            u.name, state, binary_size(u.committed_bytes), size, paths.get(u.name, u.display_name)
        )
    return table


@files_app.command("uploads")
def uploads(
    cancel: str = typer.Option(
        "", "--cancel", help="uploads/{upload} to cancel (its stored parts are deleted)"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List the unfinished uploads this machine can resume, or cancel one."""
    target, bearer = connect("files", address, token)
    store = resume_store()
    paths: dict[str, str] = {}

    async def run() -> list[file_service_pb2.Upload]:
        channel, client = _client(target, bearer)
        try:
            if cancel:
                cancelled = await client.cancel_upload(cancel)
                await asyncio.to_thread(store.remove_upload, cancel)
                return [cancelled]
            found = []
            for record in await asyncio.to_thread(store.records):
                if record.key.server != target:
                    continue
                try:
                    status = await client.upload_status(record.upload)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    await asyncio.to_thread(store.remove_upload, record.upload)
                    continue
                if status.state != file_service_pb2.UPLOAD_STATE_ACTIVE:
                    await asyncio.to_thread(store.remove_upload, record.upload)
                    continue
                paths[status.name] = record.key.path
                found.append(status)
            return found
        finally:
            await channel.close()

    listed = run_client(run(), target)
    if cancel:
        stderr.print(f"cancelled {cancel}", highlight=False)
    emit(listed, output, lambda items: upload_table(items, paths))
