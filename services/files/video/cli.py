"""``mediagrid videos upload|show|ls|thumbnails``: videos and their processing state.

The commands talk to a running VideoService (in the files service); the address and token
are found as for every client command (``common/cli_session.py``). ``upload`` resumes like
``files upload`` (same resume store); ``show --wait`` waits until probing and thumbnails
have finished (succeeded or failed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import typer
from google.protobuf.message import Message
from mediagrid.files.v1 import video_service_pb2, video_service_pb2_grpc
from rich.console import Group
from rich.table import Table

from common.channels import open_channel
from common.cli_output import OUTPUT, Output, binary_size, emit, name_table
from common.cli_support import address_option, connect, fail, run_client, token_option
from services.files.video.convert import STATE_NAMES

videos_app = typer.Typer(
    help="Videos: upload, metadata, thumbnails and processing state.", no_args_is_help=True
)
PENDING = (
    video_service_pb2.PROCESSING_STATE_UNSPECIFIED,
    video_service_pb2.PROCESSING_STATE_PENDING,
)


def register(app: typer.Typer) -> None:
    app.add_typer(videos_app, name="videos")


def video_name(value: str) -> str:
    """``videos/ID``, ``files/ID`` or a bare ``ID`` -> ``videos/ID``."""
    for prefix in ("videos/", "files/"):
        if value.startswith(prefix):
            return "videos/" + value.removeprefix(prefix)
    return f"videos/{value}"


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def fetch_video(
    address: str, token: str | None, name: str, deadline: float
) -> video_service_pb2.Video:
    async with open_channel(address) as channel:
        stub = video_service_pb2_grpc.VideoServiceStub(channel)
        response: video_service_pb2.GetVideoResponse = await stub.GetVideo(
            video_service_pb2.GetVideoRequest(name=name),
            metadata=_metadata(token),
            timeout=deadline,
        )
    return response.video


def processed(video: video_service_pb2.Video) -> bool:
    """Both steps finished (succeeded or failed)."""
    return video.probe.state not in PENDING and video.thumbnail_step.state not in PENDING


async def wait_for_video(
    address: str, token: str | None, name: str, deadline: float, limit: float
) -> video_service_pb2.Video:
    """GetVideo until both steps finished or ``limit`` seconds passed (then the last answer)."""
    give_up = time.monotonic() + limit
    delay = 0.2
    while True:
        video = await fetch_video(address, token, name, deadline)
        if processed(video) or time.monotonic() >= give_up:
            return video
        await asyncio.sleep(min(delay, max(0.0, give_up - time.monotonic())))
        delay = min(delay * 1.5, 2.0)


def _seconds(duration: object) -> float:
    return float(duration.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


def render_video(video: video_service_pb2.Video) -> Group:
    """The rich tables ``videos show`` prints."""
    summary = Table(title=f"{video.name} ({video.display_name})", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value", overflow="fold")
    summary.add_row("file", video.file)
    summary.add_row("owner", video.owner)
    summary.add_row("content type", video.content_type)
    summary.add_row("size", binary_size(video.size_bytes))
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
        steps.add_column(column, overflow="fold")
    for label, step in (("probe", video.probe), ("thumbnails", video.thumbnail_step)):
        steps.add_row(label, STATE_NAMES.get(step.state, str(step.state)), step.job, step.error)
    thumbs = thumbnail_table(video.thumbnails)
    thumbs.title = "thumbnails"
    return Group(summary, steps, thumbs)


def video_table(videos: Sequence[Message]) -> Table:
    table = name_table("name", "display name", "size", "probe", "thumbnails", "duration", "frame")
    for video in videos:
        assert isinstance(video, video_service_pb2.Video)
        meta = video.metadata
        known = video.HasField("metadata")
        table.add_row(
            video.name,
            video.display_name,
            binary_size(video.size_bytes),
            STATE_NAMES.get(video.probe.state, str(video.probe.state)),
            STATE_NAMES.get(video.thumbnail_step.state, str(video.thumbnail_step.state)),
            f"{_seconds(meta.duration):.1f} s" if known else "",
            f"{meta.width}x{meta.height}" if known else "",
        )
    return table


def thumbnail_table(thumbnails: Sequence[Message]) -> Table:
    table = Table()
    for column in ("#", "time", "size", "url"):
        table.add_column(column, overflow="fold")
    for thumb in thumbnails:
        assert isinstance(thumb, video_service_pb2.Thumbnail)
        table.add_row(
            str(thumb.index),
            f"{_seconds(thumb.time_offset):.2f} s",
            f"{thumb.width}x{thumb.height}",
            thumb.url,
        )
    return table


@videos_app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    name: str = typer.Option(None, "--name", help="display name (default: the file's name)"),
    content_type: str = typer.Option(
        None, "--content-type", help="video/... (default: guessed from the file name)"
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="continue an unfinished upload of this same file"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Upload a video (progress bar, resumable); prints its name (videos/ID).

    Probing and thumbnails start once it is stored: `mediagrid videos show NAME --wait`.
    """
    from services.files.cli import run_upload

    target, bearer = connect("files", address, token)
    file = run_upload(
        path,
        address=target,
        token=bearer,
        video=True,
        resume=resume,
        name=name,
        content_type=content_type,
    )
    if output in (Output.table, Output.names):
        typer.echo(video_name(file.name))  # the name alone, for `NAME=$(...)`
    else:
        from services.files.cli import file_table

        emit([file], output, file_table, single=True)


@videos_app.command("show")
def show(
    name: str = typer.Argument(..., help="videos/ID, files/ID or ID"),
    wait: bool = typer.Option(
        False, "--wait", help="wait until probing and thumbnails have finished"
    ),
    wait_timeout: float = typer.Option(
        300.0, "--wait-timeout", help="give up waiting after this many seconds (exit 1)"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
    as_json: bool = typer.Option(False, "--json", hidden=True, help="same as --output json"),
    timeout: float = typer.Option(10.0, help="deadline of each call in seconds"),
) -> None:
    """Show a video's metadata, processing state and thumbnail URLs."""
    target, bearer = connect("files", address, token)
    wanted = video_name(name)
    if wait:
        video = run_client(wait_for_video(target, bearer, wanted, timeout, wait_timeout), target)
    else:
        video = run_client(fetch_video(target, bearer, wanted, timeout), target)
    emit(
        [video], Output.json if as_json else output, lambda items: render_video(video), single=True
    )
    if wait and not processed(video):
        fail(f"{wanted} was still processing after {wait_timeout:.0f} s")
    if video.probe.state == video_service_pb2.PROCESSING_STATE_FAILED:
        fail(f"{wanted}: probing failed: {video.probe.error}")


@videos_app.command("ls")
def ls(
    owner: str = typer.Option("", "--owner", help="users/{user} (default: you; admins only)"),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List videos with their processing state, newest first."""
    target, bearer = connect("files", address, token)

    async def run() -> list[video_service_pb2.Video]:
        found: list[video_service_pb2.Video] = []
        page = ""
        async with open_channel(target) as channel:
            stub = video_service_pb2_grpc.VideoServiceStub(channel)
            while True:
                response = await stub.ListVideos(
                    video_service_pb2.ListVideosRequest(
                        owner=owner, page_size=200, page_token=page
                    ),
                    metadata=_metadata(bearer),
                    timeout=30,
                )
                found.extend(response.videos)
                page = response.next_page_token
                if not page:
                    return found

    videos = run_client(run(), target)
    emit(videos, output, video_table)


@videos_app.command("thumbnails")
def thumbnails(
    name: str = typer.Argument(..., help="videos/ID, files/ID or ID"),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List a video's thumbnails with their presigned URLs (`-o names`: the URLs only)."""
    target, bearer = connect("files", address, token)
    video = run_client(fetch_video(target, bearer, video_name(name), 10.0), target)
    if output is Output.names:
        for thumb in video.thumbnails:
            typer.echo(thumb.url)
        return
    emit(list(video.thumbnails), output, thumbnail_table)
    if not video.thumbnails:
        state = STATE_NAMES.get(video.thumbnail_step.state, "")
        typer.echo(f"no thumbnails yet (thumbnail step: {state})", err=True)
