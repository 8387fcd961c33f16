"""``mediagrid videos ...`` commands; ``services/files/cli.py`` calls ``register(app)``.

The commands talk to a running VideoService: ``--address`` (default
``MEDIAGRID_FILES_ADDRESS``, else ``MEDIAGRID_GRPC_HOST:MEDIAGRID_GRPC_PORT``) with the bearer
token from ``--token`` / ``MEDIAGRID_TOKEN``.
"""

from __future__ import annotations

import asyncio

import grpc
import typer
from google.protobuf import json_format
from mediagrid.files.v1 import video_pb2, video_pb2_grpc
from rich.console import Console, Group
from rich.table import Table

from common.server import host_port
from services.files.video.convert import STATE_NAMES

videos_app = typer.Typer(help="Videos: metadata, thumbnails and processing state.")
out = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(videos_app, name="videos")


def video_name(value: str) -> str:
    """``videos/ID``, ``files/ID`` or a bare ``ID`` -> ``videos/ID``."""
    for prefix in ("videos/", "files/"):
        if value.startswith(prefix):
            return "videos/" + value.removeprefix(prefix)
    return f"videos/{value}"


def default_address() -> str:
    from common.cli import settings_or_exit

    settings = settings_or_exit()
    return settings.files_address or host_port(settings.grpc_host, settings.grpc_port)


async def fetch_video(address: str, token: str, name: str, deadline: float) -> video_pb2.Video:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = video_pb2_grpc.VideoServiceStub(channel)
        response: video_pb2.GetVideoResponse = await stub.GetVideo(
            video_pb2.GetVideoRequest(name=name),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=deadline,
        )
    return response.video


def _seconds(duration: object) -> float:
    return float(duration.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


def render_video(video: video_pb2.Video) -> Group:
    """The rich tables ``videos show`` prints."""
    summary = Table(title=f"{video.name} ({video.display_name})", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("file", video.file)
    summary.add_row("owner", video.owner)
    summary.add_row("content type", video.content_type)
    summary.add_row("size", f"{video.size_bytes:,} bytes")
    if video.HasField("metadata"):
        meta = video.metadata
        summary.add_row("duration", f"{_seconds(meta.duration):.3f} s")
        summary.add_row("container", meta.container)
        summary.add_row("video codec", meta.video_codec)
        summary.add_row("audio codec", meta.audio_codec or "(none)")
        summary.add_row("resolution", f"{meta.width}x{meta.height}")
        summary.add_row("frame rate", f"{meta.frame_rate:.3f} fps")
        summary.add_row("bit rate", f"{meta.bit_rate:,} bit/s")
        summary.add_row("rotation", f"{meta.rotation_degrees} degrees")
    steps = Table(title="processing")
    for column in ("step", "state", "job", "error"):
        steps.add_column(column)
    for label, step in (("probe", video.probe), ("thumbnails", video.thumbnail_step)):
        steps.add_row(label, STATE_NAMES.get(step.state, str(step.state)), step.job, step.error)
    thumbs = Table(title="thumbnails")
    for column in ("#", "time", "size", "url"):
        thumbs.add_column(column, overflow="fold")
    for thumb in video.thumbnails:
        thumbs.add_row(
            str(thumb.index),
            f"{_seconds(thumb.time_offset):.2f} s",
            f"{thumb.width}x{thumb.height}",
            thumb.uri,
        )
    return Group(summary, steps, thumbs)


@videos_app.command("show")
def show(
    name: str = typer.Argument(..., help="videos/ID, files/ID or ID"),
    address: str | None = typer.Option(
        None, help="host:port of the files service", envvar="MEDIAGRID_FILES_ADDRESS"
    ),
    token: str = typer.Option(..., help="bearer token", envvar="MEDIAGRID_TOKEN"),
    as_json: bool = typer.Option(False, "--json", help="print the Video message as JSON"),
    timeout: float = typer.Option(10.0, help="deadline in seconds"),
) -> None:
    """Show a video's metadata, processing state and thumbnail URLs."""
    target = address or default_address()
    try:
        video = asyncio.run(fetch_video(target, token, video_name(name), timeout))
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json_format.MessageToJson(video))
    else:
        out.print(render_video(video))
