"""Domain types of the files service: frozen pydantic models, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from common.models import FrozenModel

FileKind = Literal["file", "video"]
ShareRole = Literal["reader", "writer"]
UploadState = Literal["active", "completed", "cancelled", "failed", "expired"]
UploadVia = Literal["stream", "url"]


class FileRecord(FrozenModel):
    """A committed file (its current version)."""

    id: str
    owner_id: str
    job_id: str | None = None
    display_name: str
    content_type: str
    size_bytes: int
    sha256: str
    bucket: str
    object_key: str
    version_id: str
    etag: str
    labels: dict[str, str] = Field(default_factory=dict)
    kind: FileKind = "file"
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"files/{self.id}"

    @property
    def owner(self) -> str:
        return f"users/{self.owner_id}"

    @property
    def deleted(self) -> bool:
        return self.delete_time is not None


class FileVersion(FrozenModel):
    file_id: str
    version_id: str
    size_bytes: int
    sha256: str
    etag: str
    content_type: str
    create_time: datetime


class FileShare(FrozenModel):
    file_id: str
    user_id: str
    role: ShareRole
    create_time: datetime


class UploadSession(FrozenModel):
    """A resumable upload: where its bytes go and how far S3 has acknowledged them."""

    id: str
    owner_id: str
    file_id: str
    parent_file_id: str | None = None
    job_id: str | None = None
    display_name: str
    content_type: str
    declared_size: int = 0
    client_sha256: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    kind: FileKind = "file"
    via: UploadVia = "stream"
    bucket: str
    object_key: str
    s3_upload_id: str | None = None
    part_size: int
    committed_bytes: int = 0
    state: UploadState = "active"
    stream_token: str | None = None
    error: str = ""
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return f"uploads/{self.id}"


class UploadPart(FrozenModel):
    part_number: int
    etag: str
    size_bytes: int


class Usage(FrozenModel):
    user_id: str
    file_count: int
    total_bytes: int


class NewUpload(FrozenModel):
    """What a new upload session records (validated header plus server-chosen values)."""

    id: str
    owner_id: str
    file_id: str
    parent_file_id: str | None
    job_id: str | None
    display_name: str
    content_type: str
    declared_size: int
    client_sha256: str
    labels: dict[str, str]
    kind: FileKind
    via: UploadVia
    bucket: str
    object_key: str
    part_size: int
    stream_token: str | None


class CommittedObject(FrozenModel):
    """An S3 object version that passed verification and becomes a file version."""

    version_id: str
    etag: str
    size_bytes: int
    sha256: str
