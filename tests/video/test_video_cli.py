"""``mediagrid videos show`` against a running VideoService."""

from __future__ import annotations

import asyncio
import json

import typer
from typer.testing import CliRunner

from services.files.video.cli import register, video_name
from tests.video.clips import make_clip
from tests.video.conftest import VideoEnv


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test root."""

    register(app)
    return app


def invoke(args: list[str], token: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli(), args, env={"MEDIAGRID_TOKEN": token, "COLUMNS": "400"})
    return result.exit_code, result.stdout, result.stderr


def test_names_are_normalised() -> None:
    assert video_name("abc") == "videos/abc"
    assert video_name("files/abc") == "videos/abc"
    assert video_name("videos/abc") == "videos/abc"


async def test_show_prints_metadata_state_and_thumbnail_urls(video_env: VideoEnv) -> None:
    name = await video_env.upload(make_clip(seconds=1.0, audio=True))
    for job in list(video_env.jobs.jobs):
        await video_env.run(job)
    address = video_env.ctx.addresses["files"]
    code, stdout, _ = await asyncio.to_thread(
        invoke, ["videos", "show", name.removeprefix("videos/"), "--address", address], "alice"
    )
    assert code == 0, stdout
    for expected in ("h264", "aac", "320x240", "25.000 fps", "succeeded", "thumbnails/0.jpg"):
        assert expected in stdout

    code, stdout, _ = await asyncio.to_thread(
        invoke, ["videos", "show", name, "--address", address, "--json"], "alice"
    )
    assert code == 0
    shown = json.loads(stdout)
    assert shown["name"] == name
    assert shown["probe"]["state"] == "PROCESSING_STATE_SUCCEEDED"
    assert all(t["url"].startswith("http") for t in shown["thumbnails"])


async def test_show_reports_errors_without_a_traceback(video_env: VideoEnv) -> None:
    name = await video_env.upload(make_clip(seconds=0.5))
    address = video_env.ctx.addresses["files"]
    code, _, stderr = await asyncio.to_thread(
        invoke, ["videos", "show", name, "--address", address], "bob"
    )
    assert code == 1
    assert "PERMISSION_DENIED" in stderr and "Traceback" not in stderr
