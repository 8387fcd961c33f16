"""Probing and thumbnails with PyAV (FFmpeg) and Pillow: pure functions over a file object.

Both functions are synchronous and CPU/IO-bound: call them with ``asyncio.to_thread``.
Input that FFmpeg cannot read as a video (garbage, a truncated file, audio only) raises
``InvalidVideo``; errors of the file object itself (an S3 read failing) propagate unchanged,
so a caller can tell "this file is bad" from "the storage had a hiccup".
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any

import av
from PIL import Image

from common.errors import InvalidArgument
from services.files.video.models import VideoMetadata

# Anything PyAV can read from: an open binary file, BytesIO or a RangeReader.
Source = IO[bytes] | io.RawIOBase


class InvalidVideo(InvalidArgument):
    """The file is not a readable video."""

    default_reason = "INVALID_VIDEO"


@dataclass(frozen=True)
class RenderedThumbnail:
    """A JPEG rendered at ``time_seconds`` (the requested time, clamped to the duration)."""

    time_seconds: float
    width: int
    height: int
    jpeg: bytes


@contextlib.contextmanager
def _open(fileobj: Source) -> Iterator[Any]:
    try:
        container = av.open(fileobj, mode="r")
    except av.FFmpegError as exc:
        raise InvalidVideo(f"not a readable media file: {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise InvalidVideo(f"the file ({container.format.name}) has no video stream")
    return container.streams.video[0]


def _duration_seconds(container: Any, stream: Any) -> float:
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return 0.0


def _rotation(frame: Any, stream: Any) -> int:
    """Clockwise display rotation from the display matrix, else the legacy ``rotate`` tag."""
    counterclockwise = getattr(frame, "rotation", 0) or 0
    if counterclockwise:
        return round(-float(counterclockwise)) % 360
    tag = stream.metadata.get("rotate")
    try:
        return int(float(tag)) % 360 if tag else 0
    except ValueError:
        return 0


def _decode(container: Any, stream: Any) -> Iterator[Any]:
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise InvalidVideo(f"the video stream cannot be decoded: {exc}") from exc


def _first_frame(container: Any, stream: Any) -> Any:
    for frame in _decode(container, stream):
        return frame
    raise InvalidVideo("the video stream has no decodable frame")


def probe(fileobj: Source) -> VideoMetadata:
    """Metadata of the video in ``fileobj``; decodes the first frame to prove it is playable."""
    with _open(fileobj) as container:
        stream = _video_stream(container)
        frame = _first_frame(container, stream)
        rate: Fraction | None = stream.average_rate or stream.guessed_rate
        audio = container.streams.audio
        return VideoMetadata(
            duration_seconds=_duration_seconds(container, stream),
            container=container.format.name,
            video_codec=stream.codec_context.name,
            audio_codec=audio[0].codec_context.name if audio else "",
            width=stream.codec_context.width or frame.width,
            height=stream.codec_context.height or frame.height,
            frame_rate=float(rate) if rate else 0.0,
            bit_rate=int(container.bit_rate or 0),
            rotation_degrees=_rotation(frame, stream),
        )


def _frame_at(container: Any, stream: Any, seconds: float) -> Any:
    """The frame on screen at ``seconds``: seek to the keyframe before, decode forward."""
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    target = start + seconds
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError as exc:
        raise InvalidVideo(f"cannot seek to {seconds:.3f}s: {exc}") from exc
    shown = None
    for frame in _decode(container, stream):
        if shown is not None and frame.time is not None and frame.time > target:
            break
        shown = frame
    if shown is None:
        raise InvalidVideo(f"no decodable frame at {seconds:.3f}s")
    return shown


def _jpeg(frame: Any, rotation: int, width: int, quality: int) -> tuple[bytes, int, int]:
    image: Image.Image = frame.to_image()
    if rotation:
        image = image.rotate(-rotation, expand=True)  # PIL turns counterclockwise
    height = max(1, round(width * image.height / image.width))
    image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue(), width, height


def render_thumbnails(
    fileobj: Source, times: Sequence[float], width: int, *, quality: int = 85
) -> list[RenderedThumbnail]:
    """One JPEG per requested time (clamped to [0, duration]), ``width`` pixels wide, upright."""
    if width <= 0:
        raise ValueError("width must be positive")
    with _open(fileobj) as container:
        stream = _video_stream(container)
        duration = _duration_seconds(container, stream)
        rotation = _rotation(_first_frame(container, stream), stream)
        rendered = []
        for requested in times:
            seconds = min(max(float(requested), 0.0), duration)
            frame = _frame_at(container, stream, seconds)
            data, w, h = _jpeg(frame, rotation, width, quality)
            rendered.append(RenderedThumbnail(seconds, w, h, data))
        return rendered
