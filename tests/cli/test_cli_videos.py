"""``mediagrid videos``: upload a clip, wait for processing, read metadata and thumbnails."""

from __future__ import annotations

import io
import json
import urllib.request

from PIL import Image

from tests.cli.conftest import Cli
from tests.video.clips import make_clip


def test_upload_then_show_waits_for_metadata_and_thumbnails(cli: Cli) -> None:
    cli.login()
    (cli.cwd / "holiday.mp4").write_bytes(make_clip(seconds=2.0, audio=True))

    uploaded = cli.run("videos", "upload", "holiday.mp4")
    name = uploaded.stdout.strip()
    assert name.startswith("videos/"), uploaded.stdout

    shown = json.loads(cli.run("videos", "show", name, "--wait", "-o", "json").stdout)
    assert shown["name"] == name
    assert shown["probe"]["state"] == "PROCESSING_STATE_SUCCEEDED"
    assert shown["thumbnail_step"]["state"] == "PROCESSING_STATE_SUCCEEDED"
    meta = shown["metadata"]
    assert (meta["width"], meta["height"], meta["video_codec"]) == (320, 240, "h264")
    assert meta["audio_codec"] == "aac"

    table = cli.run("videos", "show", name).stdout
    for expected in (name, "h264", "320x240", "25.000 fps", "succeeded"):
        assert expected in table

    urls = cli.run("videos", "thumbnails", name, "-o", "names").stdout.split()
    assert len(urls) == 2
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert Image.open(io.BytesIO(reply.read())).format == "JPEG"

    listed = json.loads(cli.run("videos", "ls", "-o", "json").stdout)
    assert [v["name"] for v in listed] == [name]
    assert name in cli.run("videos", "ls").stdout


def test_show_of_someone_elses_video_fails_cleanly(cli: Cli) -> None:
    cli.login()
    result = cli.run("videos", "show", "videos/0123456789abcdef0123456789abcdef", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "NOT_FOUND" in result.stderr or "PERMISSION_DENIED" in result.stderr
    assert "Traceback" not in result.stderr
