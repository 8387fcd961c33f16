"""Domain types of the video part of the files service (frozen pydantic models, no I/O)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from common.models import FrozenModel


class VideoMetadata(FrozenModel):
    """What probing found out about a video file."""

    duration_seconds: float = Field(ge=0)
    # FFmpeg's demuxer name, for example ``mov,mp4,m4a,3gp,3g2,mj2``.
    container: str
    video_codec: str
    # Empty when the file has no audio stream.
    audio_codec: str = ""
    # Coded size of the picture, before rotation.
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    frame_rate: float = Field(ge=0)
    # Overall bit rate in bits per second (0 when unknown).
    bit_rate: int = Field(ge=0)
    # Degrees clockwise a player rotates the decoded picture for display: 0, 90, 180 or 270.
    rotation_degrees: int = Field(default=0, ge=0, lt=360)


class ProcessingState(StrEnum):
    """State of one processing step (probe or thumbnails) of a video."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ProcessingStep(FrozenModel):
    state: ProcessingState
    job: str | None = None  # ``jobs/{job}`` that runs (or ran) the step
    error: str | None = None
    update_time: datetime


class Thumbnail(FrozenModel):
    """One stored JPEG thumbnail of a video."""

    index: int = Field(ge=0)
    time_seconds: float = Field(ge=0)
    bucket: str
    key: str
    version_id: str | None = None  # S3 version of the JPEG (URLs pin it)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    size_bytes: int = Field(ge=0)


class Video(FrozenModel):
    """A video: its file's record, probed metadata, processing steps and thumbnails."""

    file_id: str
    owner_id: str
    job_id: str | None
    display_name: str
    content_type: str
    size_bytes: int
    bucket: str
    object_key: str
    version_id: str
    metadata: VideoMetadata | None
    probe: ProcessingStep
    thumbnail_step: ProcessingStep
    thumbnails: tuple[Thumbnail, ...] = ()
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return f"videos/{self.file_id}"

    @property
    def file(self) -> str:
        return f"files/{self.file_id}"

    @property
    def owner(self) -> str:
        """``users/{id}`` owning the video's file (its processing jobs act for this user)."""
        return f"users/{self.owner_id}"
