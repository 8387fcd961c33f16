"""S3 pieces of video processing: the synchronous client PyAV's reads need, and key layout."""

from __future__ import annotations

from typing import Any

import boto3

from common.aws import AwsClients
from services.files.video.range_reader import RangeReader, open_s3_object


def sync_s3_client(aws: AwsClients) -> Any:
    """A boto3 (synchronous) S3 client configured like the suite's aioboto3 clients.

    PyAV pulls bytes through a synchronous file object from a worker thread; a plain boto3
    client there avoids bouncing every read back onto the event loop.
    """
    settings = aws.settings
    credentials: dict[str, str] = {}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
        }
    session = boto3.session.Session(region_name=settings.aws_region, **credentials)
    return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=aws.config())


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
