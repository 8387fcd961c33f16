"""probe() and render_thumbnails() on generated clips, garbage and truncated input."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.files.video.processing import InvalidVideo, probe, render_thumbnails
from tests.video.clips import make_clip, rotate_clockwise


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip(seconds=2.0, fps=25, width=320, height=240)


def test_probe_reports_duration_size_rate_and_codec(clip: bytes) -> None:
    meta = probe(io.BytesIO(clip))
    assert meta.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert (meta.width, meta.height) == (320, 240)
    assert meta.frame_rate == pytest.approx(25.0)
    assert meta.video_codec == "h264"
    assert meta.audio_codec == ""
    assert "mp4" in meta.container
    assert meta.bit_rate > 0
    assert meta.rotation_degrees == 0


def test_probe_reports_the_audio_codec() -> None:
    meta = probe(io.BytesIO(make_clip(seconds=1.0, audio=True)))
    assert meta.audio_codec == "aac"
    assert meta.video_codec == "h264"


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_probe_reads_rotation_from_the_display_matrix(clip: bytes, degrees: int) -> None:
    assert probe(io.BytesIO(rotate_clockwise(clip, degrees))).rotation_degrees == degrees


def test_thumbnails_are_jpegs_of_the_requested_width(clip: bytes) -> None:
    thumbs = render_thumbnails(io.BytesIO(clip), [0.0, 1.0, 1.9], 160)
    assert [t.time_seconds for t in thumbs] == [0.0, 1.0, 1.9]
    for thumb in thumbs:
        image = Image.open(io.BytesIO(thumb.jpeg))
        assert image.format == "JPEG"
        assert image.size == (160, 120) == (thumb.width, thumb.height)


def test_thumbnails_show_the_frame_at_the_requested_time(clip: bytes) -> None:
    # Frame i has red = i * 5; JPEG and YUV conversion blur colours by a few units only.
    thumbs = render_thumbnails(io.BytesIO(clip), [0.0, 1.0, 1.5], 64)
    reds = [Image.open(io.BytesIO(t.jpeg)).convert("RGB").getpixel((32, 24))[0] for t in thumbs]
    for red, frame in zip(reds, [0, 25, 37], strict=True):
        assert abs(red - frame * 5) <= 12, (reds, frame)


def test_thumbnail_times_are_clamped_to_the_duration(clip: bytes) -> None:
    thumbs = render_thumbnails(io.BytesIO(clip), [-3.0, 60.0], 32)
    assert thumbs[0].time_seconds == 0.0
    assert thumbs[1].time_seconds == pytest.approx(2.0, abs=0.05)
    last = Image.open(io.BytesIO(thumbs[1].jpeg)).convert("RGB").getpixel((16, 12))[0]
    assert abs(last - 49 * 5) <= 12


def test_thumbnails_of_a_rotated_clip_are_upright(clip: bytes) -> None:
    (thumb,) = render_thumbnails(io.BytesIO(rotate_clockwise(clip, 90)), [0.5], 120)
    assert (thumb.width, thumb.height) == (120, 160)
    assert Image.open(io.BytesIO(thumb.jpeg)).size == (120, 160)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"this is not a video at all" * 100, bytes(range(256)) * 64],
    ids=["empty", "one-byte", "text", "noise"],
)
def test_garbage_is_an_invalid_video(data: bytes) -> None:
    with pytest.raises(InvalidVideo) as caught:
        probe(io.BytesIO(data))
    assert caught.value.reason == "INVALID_VIDEO"
    with pytest.raises(InvalidVideo):
        render_thumbnails(io.BytesIO(data), [0.0], 32)


def test_truncated_video_is_an_invalid_video(clip: bytes) -> None:
    with pytest.raises(InvalidVideo):
        probe(io.BytesIO(clip[: len(clip) // 2]))


def test_audio_only_file_is_an_invalid_video() -> None:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        sound = out.add_stream("aac", rate=44100)
        chunk = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in chunk.planes:
            plane.update(bytes(plane.buffer_size))
        chunk.sample_rate, chunk.pts = 44100, 0
        for packet in [*sound.encode(chunk), *sound.encode()]:
            out.mux(packet)
    with pytest.raises(InvalidVideo, match="no video stream"):
        probe(io.BytesIO(buffer.getvalue()))
