"""The one place where protobuf messages and the files service's domain types meet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mediagrid.files.v1 import file_pb2, file_service_pb2

from common.errors import InvalidArgument
from common.timestamps import timestamp
from services.files.models import FileRecord, FileShare, FileVersion, ShareRole, UploadSession
from services.files.upload import Progress, UploadItem, UploadStart

_UPLOAD_STATES = {
    "active": file_service_pb2.UPLOAD_STATE_ACTIVE,
    "completed": file_service_pb2.UPLOAD_STATE_COMPLETED,
    "cancelled": file_service_pb2.UPLOAD_STATE_CANCELLED,
    "failed": file_service_pb2.UPLOAD_STATE_FAILED,
    "expired": file_service_pb2.UPLOAD_STATE_EXPIRED,
}
_ROLES: dict[ShareRole, int] = {
    "reader": file_service_pb2.SHARE_ROLE_READER,
    "writer": file_service_pb2.SHARE_ROLE_WRITER,
}


def file_to_proto(record: FileRecord) -> file_pb2.File:
    return file_pb2.File(
        name=record.name,
        owner=record.owner,
        job=f"jobs/{record.job_id}" if record.job_id else "",
        display_name=record.display_name,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        version_id=record.version_id,
        etag=record.etag,
        labels=record.labels,
        storage=file_pb2.StorageLocation(
            bucket=record.bucket, key=record.object_key, version_id=record.version_id
        ),
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        delete_time=timestamp(record.delete_time),
    )


def header_from_proto(header: file_pb2.UploadHeader) -> UploadStart:
    return UploadStart(
        display_name=header.display_name,
        content_type=header.content_type,
        size_bytes=header.size_bytes,
        sha256=header.sha256,
        job=header.job,
        upload=header.upload,
        offset=header.offset,
        parent=header.parent,
        labels=dict(header.labels),
    )


async def upload_items(requests: AsyncIterator[Any]) -> AsyncIterator[UploadItem]:
    """UploadRequest-shaped messages (a ``header``/``data`` oneof named ``payload``) -> items.

    Works for any request message with that oneof, so VideoService.UploadVideo can use it.
    """
    async for request in requests:
        if isinstance(request, memoryview):  # data, via services.files.wire's fast path
            yield request
            continue
        kind = request.WhichOneof("payload")
        if kind == "header":
            yield header_from_proto(request.header)
        elif kind == "data":
            yield request.data
        else:
            raise InvalidArgument.field(
                "payload", "each message carries a header or data", reason="EMPTY_MESSAGE"
            )


def progress_to_proto(progress: Progress) -> file_pb2.UploadProgress:
    return file_pb2.UploadProgress(
        upload=progress.upload,
        received_bytes=progress.received_bytes,
        committed_bytes=progress.committed_bytes,
        parts_completed=progress.parts_completed,
    )


def upload_response(item: Progress | FileRecord) -> file_service_pb2.UploadResponse:
    if isinstance(item, Progress):
        return file_service_pb2.UploadResponse(progress=progress_to_proto(item))
    return file_service_pb2.UploadResponse(file=file_to_proto(item))


def upload_to_proto(session: UploadSession) -> file_service_pb2.Upload:
    return file_service_pb2.Upload(
        name=session.name,
        owner=f"users/{session.owner_id}",
        state=_UPLOAD_STATES[session.state],
        committed_bytes=session.committed_bytes,
        size_bytes=session.declared_size,
        part_size_bytes=session.part_size,
        file=f"files/{session.file_id}",
        display_name=session.display_name,
        content_type=session.content_type,
        create_time=timestamp(session.create_time),
        update_time=timestamp(session.update_time),
    )


def version_to_proto(version: FileVersion, current_version_id: str) -> file_service_pb2.FileVersion:
    return file_service_pb2.FileVersion(
        version_id=version.version_id,
        size_bytes=version.size_bytes,
        sha256=version.sha256,
        etag=version.etag,
        content_type=version.content_type,
        create_time=timestamp(version.create_time),
        current=version.version_id == current_version_id,
    )


def share_to_proto(share: FileShare) -> file_service_pb2.FileShare:
    return file_service_pb2.FileShare(
        file=f"files/{share.file_id}",
        user=f"users/{share.user_id}",
        role=_ROLES[share.role],  # type: ignore[arg-type]
        create_time=timestamp(share.create_time),
    )


def role_from_proto(value: int) -> ShareRole:
    for role, number in _ROLES.items():
        if number == value:
            return role
    raise InvalidArgument.field(
        "role", "must be SHARE_ROLE_READER or SHARE_ROLE_WRITER", reason="INVALID_ROLE"
    )
