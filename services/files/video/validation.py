"""Field rules of the VideoService's requests that the edge's hygiene layer does not know.

The suite interceptor (``common.hygiene``) has already refused NUL characters, Durations
outside +-10,000 years and NaN/Infinity; these are the video's own bounds. Every function
raises ``InvalidArgument`` naming the request field.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from common.errors import InvalidArgument, Violations
from services.files.video.models import VideoMetadata

# A probe result beyond these is a broken probe or a forged report, not a video.
MAX_DURATION_SECONDS = 30 * 24 * 3600
MAX_FRAME_RATE = 1000.0
MAX_DIMENSION = 32_768  # pixels; 16K video is 15,360 x 8,640
MAX_BIT_RATE = 100_000_000_000  # 100 Gbit/s, above uncompressed 8K
ROTATIONS = (0, 90, 180, 270)
MAX_NAME_CHARS = 256  # container and codec names (FFmpeg's are short)

# Domain field -> request field (under ``metadata.``) where the names differ.
_PROTO_FIELDS = {"duration_seconds": "duration"}


def _check_metadata(values: Mapping[str, Any], found: Violations) -> None:
    def bad(name: str, description: str) -> None:
        found.add(f"metadata.{_PROTO_FIELDS.get(name, name)}", description)

    duration = values["duration_seconds"]
    if not (math.isfinite(duration) and 0 <= duration <= MAX_DURATION_SECONDS):
        bad("duration_seconds", f"must be between 0 and {MAX_DURATION_SECONDS} s")
    frame_rate = values["frame_rate"]
    if not (math.isfinite(frame_rate) and 0 <= frame_rate <= MAX_FRAME_RATE):
        bad("frame_rate", f"must be 0 (unknown) or a rate up to {MAX_FRAME_RATE:g} per second")
    for name in ("width", "height"):
        if not 0 <= values[name] <= MAX_DIMENSION:
            bad(name, f"must be between 0 and {MAX_DIMENSION} pixels")
    if not 0 <= values["bit_rate"] <= MAX_BIT_RATE:
        bad("bit_rate", f"must be between 0 (unknown) and {MAX_BIT_RATE} bit/s")
    if values["rotation_degrees"] not in ROTATIONS:
        bad("rotation_degrees", "must be 0, 90, 180 or 270")
    for name in ("container", "video_codec", "audio_codec"):
        text = values[name]
        if len(text) > MAX_NAME_CHARS or any(unicodedata.category(c) == "Cc" for c in text):
            bad(name, f"must be at most {MAX_NAME_CHARS} printable characters")


def video_metadata(values: Mapping[str, Any]) -> VideoMetadata:
    """A probe's metadata (domain field names) checked against the bounds above.

    Raises INVALID_ARGUMENT ``INVALID_VIDEO_METADATA`` with one violation per bad field.
    """
    found = Violations()
    _check_metadata(values, found)
    found.raise_if_any("INVALID_VIDEO_METADATA")
    return VideoMetadata(**values)


def stream_ttl_seconds(ttl_seconds: float, *, default: int, maximum: int) -> int:
    """Whole seconds a stream URL lives: 0 asks for ``default``; at most ``maximum``."""
    if not (math.isfinite(ttl_seconds) and 0 <= ttl_seconds <= maximum):
        raise InvalidArgument.field(
            "ttl", f"must be between 0 and {maximum} seconds", reason="INVALID_TTL"
        )
    return math.ceil(ttl_seconds) or min(default, maximum)
