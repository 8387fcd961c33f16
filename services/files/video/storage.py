"""S3 pieces of video processing: objects opened for PyAV's reads, and key layout."""

from __future__ import annotations

from typing import Any

from common.aws import AwsClients
from services.files.video.range_reader import RangeReader, open_s3_object


def open_video_object(
    client: Any, aws: AwsClients, *, bucket: str, key: str, version_id: str | None
) -> RangeReader:
    """A cached ranged reader over one object version, sized by the ``video_probe_*`` settings."""
    return open_s3_object(
        client,
        bucket=bucket,
        key=key,
        version_id=version_id,
        block_size=aws.settings.video_probe_block_bytes,
        cache_blocks=aws.settings.video_probe_cache_blocks,
    )


def thumbnail_prefix(content_key: str) -> str:
    """``users/u/[jobs/j/]f/content`` -> ``users/u/[jobs/j/]f/thumbnails/``."""
    head, sep, tail = content_key.rpartition("/")
    if not sep or tail != "content":
        raise ValueError(f"not a file content key: {content_key!r}")
    return f"{head}/thumbnails/"


def thumbnail_key(content_key: str, index: int) -> str:
    return f"{thumbnail_prefix(content_key)}{index}.jpg"
