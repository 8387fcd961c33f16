"""Protobuf <-> domain conversion for the VideoService (the only place that does it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2
from mediagrid.files.v1 import video_pb2

from common.timestamps import set_timestamp, timestamp
from services.files.video.models import (
    ProcessingState,
    ProcessingStep,
    Thumbnail,
    Video,
    VideoMetadata,
)

STATES = {
    ProcessingState.PENDING: video_pb2.PROCESSING_STATE_PENDING,
    ProcessingState.SUCCEEDED: video_pb2.PROCESSING_STATE_SUCCEEDED,
    ProcessingState.FAILED: video_pb2.PROCESSING_STATE_FAILED,
}
STATE_NAMES = {
    video_pb2.PROCESSING_STATE_UNSPECIFIED: "unspecified",
    video_pb2.PROCESSING_STATE_PENDING: "pending",
    video_pb2.PROCESSING_STATE_SUCCEEDED: "succeeded",
    video_pb2.PROCESSING_STATE_FAILED: "failed",
}

# (bucket, key, version id or None) -> (presigned url, expiry)
# (bucket, key, version id) -> (URL, expiry), or None when no URL may be minted (the object
# is not stored).
Presign = Callable[[str, str, str | None], tuple[str, datetime] | None]


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds(value: duration_pb2.Duration) -> float:
    return float(value.ToNanoseconds()) / 1e9


def metadata_to_proto(meta: VideoMetadata) -> video_pb2.VideoMetadata:
    return video_pb2.VideoMetadata(
        duration=duration(meta.duration_seconds),
        container=meta.container,
        video_codec=meta.video_codec,
        audio_codec=meta.audio_codec,
        width=meta.width,
        height=meta.height,
        frame_rate=meta.frame_rate,
        bit_rate=meta.bit_rate,
        rotation_degrees=meta.rotation_degrees,
    )


def metadata_values(message: video_pb2.VideoMetadata) -> dict[str, Any]:
    """The fields of a ``VideoMetadata`` message under the domain model's names (unchecked:
    ``validation.video_metadata`` checks them and builds the model)."""
    return {
        "duration_seconds": seconds(message.duration),
        "container": message.container,
        "video_codec": message.video_codec,
        "audio_codec": message.audio_codec,
        "width": message.width,
        "height": message.height,
        "frame_rate": message.frame_rate,
        "bit_rate": message.bit_rate,
        "rotation_degrees": message.rotation_degrees,
    }


def step_to_proto(step: ProcessingStep) -> video_pb2.ProcessingStep:
    return video_pb2.ProcessingStep(
        state=STATES[step.state],
        job=step.job or "",
        error=step.error or "",
        update_time=timestamp(step.update_time),
    )


def thumbnail_to_proto(thumb: Thumbnail, presign: Presign | None) -> video_pb2.Thumbnail:
    message = video_pb2.Thumbnail(
        index=thumb.index,
        time_offset=duration(thumb.time_seconds),
        width=thumb.width,
        height=thumb.height,
        size_bytes=thumb.size_bytes,
        key=thumb.key,
        version_id=thumb.version_id or "",
    )
    if presign is not None:
        minted = presign(thumb.bucket, thumb.key, thumb.version_id)
        if minted is not None:
            message.uri, expires = minted
            set_timestamp(message.expire_time, expires)
    return message


def thumbnail_from_proto(message: video_pb2.Thumbnail, bucket: str) -> Thumbnail:
    """Raises pydantic.ValidationError on out-of-range values (the caller maps it)."""
    return Thumbnail(
        index=message.index,
        time_seconds=seconds(message.time_offset),
        bucket=bucket,
        key=message.key,
        version_id=message.version_id or None,
        width=message.width,
        height=message.height,
        size_bytes=message.size_bytes,
    )


def video_to_proto(video: Video, presign: Presign | None) -> video_pb2.Video:
    message = video_pb2.Video(
        name=video.name,
        file=video.file,
        owner=f"users/{video.owner_id}",
        display_name=video.display_name,
        content_type=video.content_type,
        size_bytes=video.size_bytes,
        probe=step_to_proto(video.probe),
        thumbnail_step=step_to_proto(video.thumbnail_step),
        thumbnails=[thumbnail_to_proto(t, presign) for t in video.thumbnails],
        create_time=timestamp(video.create_time),
        update_time=timestamp(video.update_time),
    )
    if video.metadata is not None:
        message.metadata.CopyFrom(metadata_to_proto(video.metadata))
    return message
