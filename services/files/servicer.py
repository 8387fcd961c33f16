"""FileService handlers: validate, authorize, call the repository/storage/engine, convert."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
from google.protobuf import duration_pb2
from mediagrid.files.v1 import file_service_pb2

from common import pagination, timestamps
from common.context import Principal, current_principal
from common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from services.files import convert, keys, validation, wire
from services.files.access import is_privileged, require_file, require_upload, require_user
from services.files.metrics import DOWNLOAD, TransferMetrics
from services.files.models import CommittedObject, FileRecord, FileVersion
from services.files.storage import PRESENCE_CHECK_SECONDS
from services.files.sweep import release_session_objects
from services.files.upload import TransferProfile, UploadDeps, run_upload
from services.files.upload.session import object_metadata, upload_target
from services.files.wire import generic_handler

T = TypeVar("T")
log = logging.getLogger("mediagrid.files")

# A single presigned PUT is limited to 5 GiB by S3; larger files use the streaming Upload.
MAX_URL_UPLOAD_BYTES = 5 * 1024**3
UPDATABLE_FIELDS = {"display_name", "labels"}
# Chunks read ahead from S3 while the previous ones are being sent (memory: depth x chunk).
DOWNLOAD_PREFETCH = 4


class FileServicer:
    """The FileService's handlers; ``register`` serves them through ``wire.generic_handler``
    (zero-copy upload and download data), not the generated base class."""

    def __init__(self, deps: UploadDeps) -> None:
        self.deps = deps
        self.repo = deps.repo
        self.storage = deps.storage
        self.settings = deps.settings
        self.profile = TransferProfile.files(deps.settings)
        self.transfers = TransferMetrics()

    async def _record(self, action: str, resource: str, **metadata: str) -> None:
        await self.deps.activity.record(action, resource, metadata)

    # --- standard methods --------------------------------------------------------------

    async def GetFile(
        self, request: file_service_pb2.GetFileRequest, context: Any
    ) -> file_service_pb2.GetFileResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "read"
        )
        return file_service_pb2.GetFileResponse(file=convert.file_to_proto(record))

    async def ListFiles(
        self, request: file_service_pb2.ListFilesRequest, context: Any
    ) -> file_service_pb2.ListFilesResponse:
        principal = current_principal()
        owner_id = (
            validation.user_id(request.parent, "parent") if request.parent else principal.user_id
        )
        require_user(principal, owner_id)
        size = validation.page_size(request.page_size)
        prefix = request.content_type_prefix.lower()
        job_id = validation.job_id(request.job)
        records, token = await pagination.page(
            "ListFiles",
            {
                "owner": owner_id,
                "job": job_id or "",
                "content_type_prefix": prefix,
                "show_deleted": request.show_deleted,
            },
            request.page_token,
            size,
            lambda after, limit: self.repo.list_files(
                owner_id,
                job_id=job_id,
                content_type_prefix=prefix,
                show_deleted=request.show_deleted,
                after=after,
                limit=limit,
            ),
            lambda record: (record.create_time, record.id),
            pagination.BY_TIME,
        )
        return file_service_pb2.ListFilesResponse(
            files=[convert.file_to_proto(r) for r in records], next_page_token=token
        )

    async def UpdateFile(
        self, request: file_service_pb2.UpdateFileRequest, context: Any
    ) -> file_service_pb2.UpdateFileResponse:
        principal = current_principal()
        file_id = validation.file_id(request.file.name, "file.name")
        record = await require_file(self.repo, principal, file_id, "write")
        paths = set(request.update_mask.paths)
        if not paths or not paths <= UPDATABLE_FIELDS:
            raise InvalidArgument.field(
                "update_mask",
                f"must name some of {sorted(UPDATABLE_FIELDS)}",
                reason="INVALID_UPDATE_MASK",
            )
        name = record.display_name
        labels = record.labels
        if "display_name" in paths:
            name = validation.display_name(request.file.display_name, "file.display_name")
        if "labels" in paths:
            labels = validation.labels(request.file.labels, "file.labels")
        updated = await self.repo.update_file(file_id, name, labels)
        if updated is None:
            raise NotFound(f"{record.name} does not exist", reason="FILE_NOT_FOUND")
        await self._record("files.update", record.name, fields=",".join(sorted(paths)))
        return file_service_pb2.UpdateFileResponse(file=convert.file_to_proto(updated))

    async def DeleteFile(
        self, request: file_service_pb2.DeleteFileRequest, context: Any
    ) -> file_service_pb2.DeleteFileResponse:
        principal = current_principal()
        file_id = validation.file_id(request.name)
        if request.purge:
            if not principal.is_admin:
                raise PermissionDenied("only admins may purge files", reason="PURGE_REQUIRES_ADMIN")
            record = await require_file(self.repo, principal, file_id, "manage", allow_deleted=True)
            await self._purge(record)
            return file_service_pb2.DeleteFileResponse()
        record = await require_file(self.repo, principal, file_id, "manage")
        await self.storage.add_delete_marker(record.object_key)
        deleted = await self.repo.soft_delete_file(file_id)
        if deleted is None:
            raise NotFound(f"{record.name} was deleted", reason="FILE_DELETED")
        await self._record("files.delete", record.name)
        return file_service_pb2.DeleteFileResponse(file=convert.file_to_proto(deleted))

    async def _purge(self, record: FileRecord) -> None:
        prefix = keys.object_prefix(record.owner_id, record.id, record.job_id)
        removed = await self.storage.purge_prefix(prefix)
        await self.repo.purge_file(record.id)
        await self._record("files.purge", record.name, object_versions=str(removed))

    # --- streaming upload --------------------------------------------------------------

    async def Upload(
        self, request_iterator: AsyncIterator[file_service_pb2.UploadRequest], context: Any
    ) -> AsyncIterator[file_service_pb2.UploadResponse]:
        principal = current_principal()
        items = self.transfers.counted_upload(convert.upload_items(request_iterator))
        async for item in run_upload(self.deps, principal, items, self.profile):
            yield convert.upload_response(item)

    async def GetUploadStatus(
        self, request: file_service_pb2.GetUploadStatusRequest, context: Any
    ) -> file_service_pb2.GetUploadStatusResponse:
        # What is durably committed, at once: parts of a broken stream still on their way
        # to S3 only count once they are recorded (a later call sees them).
        session = await require_upload(
            self.repo, current_principal(), validation.upload_id(request.name)
        )
        return file_service_pb2.GetUploadStatusResponse(upload=convert.upload_to_proto(session))

    async def CancelUpload(
        self, request: file_service_pb2.CancelUploadRequest, context: Any
    ) -> file_service_pb2.CancelUploadResponse:
        session = await require_upload(
            self.repo, current_principal(), validation.upload_id(request.name)
        )
        finished = await self.repo.finish_upload(session.id, "cancelled", "cancelled by the client")
        if finished is None:
            raise FailedPrecondition(
                f"{session.name} is {session.state}",
                reason="UPLOAD_NOT_ACTIVE",
                metadata={"state": session.state},
            )
        await release_session_objects(self.deps, session)
        await self._record("files.upload.cancel", session.name)
        return file_service_pb2.CancelUploadResponse(upload=convert.upload_to_proto(finished))

    # --- download ----------------------------------------------------------------------

    async def _version(self, record: FileRecord, version_id: str) -> FileVersion | None:
        """The requested version (None = current); NOT_FOUND for versions of other files."""
        if not version_id or version_id == record.version_id:
            return None
        version = await self.repo.get_version(record.id, version_id)
        if version is None:
            raise NotFound(
                f"{record.name} has no version {version_id!r}",
                reason="VERSION_NOT_FOUND",
                metadata={"resource": record.name, "version_id": version_id[:128]},
            )
        return version

    async def Download(
        self, request: file_service_pb2.DownloadRequest, context: Any
    ) -> AsyncIterator[file_service_pb2.DownloadResponse | wire.EncodedResponse]:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "read"
        )
        version = await self._version(record, request.version_id)
        size = version.size_bytes if version else record.size_bytes
        version_id = version.version_id if version else record.version_id
        if request.offset < 0 or request.length < 0:
            raise InvalidArgument.field(
                "offset" if request.offset < 0 else "length",
                "must not be negative",
                reason="INVALID_RANGE",
            )
        length = request.length or size - request.offset
        if request.offset > size or request.offset + length > size:
            raise OutOfRange(
                f"bytes {request.offset}..{request.offset + length} are past the end "
                f"({size} bytes)",
                reason="RANGE_PAST_END",
                metadata={"size_bytes": str(size)},
            )
        shown = record
        if version is not None:
            shown = record.model_copy(
                update={
                    "version_id": version.version_id,
                    "size_bytes": version.size_bytes,
                    "sha256": version.sha256,
                    "etag": version.etag,
                    "content_type": version.content_type,
                }
            )
        if length == 0:
            await self._require_object(record, version_id)
            yield file_service_pb2.DownloadResponse(file=convert.file_to_proto(shown))
            return
        chunk = min(
            self.settings.download_chunk_bytes, self.settings.grpc_max_message_bytes - 65536
        )
        sent = 0
        # Data messages are serialized in the S3 reader thread, not on the event loop.
        messages = self.storage.stream_encoded(
            record.object_key,
            version_id,
            wire.encode_download_data,
            offset=request.offset,
            length=length,
            chunk_size=chunk,
            read_ahead=DOWNLOAD_PREFETCH,
            streams=self.settings.download_read_streams,
            segment_size=self.settings.download_segment_bytes,
        )
        # The first chunk is read before anything is sent: a record whose object is gone
        # answers DATA_LOSS instead of a file header followed by an error.
        try:
            first = await anext(messages, None)
        except NotFound as exc:
            if isinstance(messages, AsyncGenerator):
                await messages.aclose()
            raise object_missing(record, version_id) from exc
        yield file_service_pb2.DownloadResponse(file=convert.file_to_proto(shown))
        self.transfers.active.add(1, DOWNLOAD)
        try:
            async for message in _prepend(first, messages):
                sent += message.size
                self.transfers.sent(message.size)
                yield message
        finally:
            self.transfers.active.add(-1, DOWNLOAD)
        if sent != length:
            raise DataLoss(f"S3 returned {sent} of {length} bytes", reason="SHORT_READ")

    async def _require_object(self, record: FileRecord, version_id: str | None) -> None:
        """DATA_LOSS (``OBJECT_MISSING``) when S3 says the record's object is not there (a
        wiped or restored store): nothing is served, and no URL is minted, for it.

        While S3 does not answer, a URL is still minted (signing is local; it works once S3
        is back, docs/operations.md "Graceful degradation"): only S3's own "not found" stops it.
        """
        try:
            await self.storage.head(
                record.object_key, version_id or None, cap=PRESENCE_CHECK_SECONDS
            )
        except NotFound as exc:
            raise object_missing(record, version_id) from exc
        except Unavailable:
            log.debug("S3 unavailable; minting a URL for %s unverified", record.name)

    # --- presigned URLs ----------------------------------------------------------------

    def _ttl(self, ttl: duration_pb2.Duration, field: str, cap: float | None = None) -> int:
        maximum = min(self.settings.presign_max_seconds, 7 * 24 * 3600)
        if cap is not None:
            maximum = min(maximum, int(cap))
        seconds = ttl.seconds + (1 if ttl.nanos > 0 else 0)
        if ttl.seconds < 0 or ttl.nanos < 0:
            raise InvalidArgument.field(field, "must not be negative", reason="INVALID_TTL")
        if seconds == 0:
            return min(self.settings.presign_default_seconds, maximum)
        if seconds > maximum:
            raise InvalidArgument.field(
                field, f"must be at most {maximum} seconds", reason="INVALID_TTL"
            )
        return seconds

    async def CreateDownloadUrl(
        self, request: file_service_pb2.CreateDownloadUrlRequest, context: Any
    ) -> file_service_pb2.CreateDownloadUrlResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "read"
        )
        version = await self._version(record, request.version_id)
        ttl = self._ttl(request.ttl, "ttl")
        disposition = None
        if request.attachment:
            disposition = (
                f"attachment; filename*=UTF-8''{quote(record.display_name.rsplit('/', 1)[-1])}"
            )
        await self._require_object(record, version.version_id if version else record.version_id)
        url = await self.storage.presign_get(
            record.object_key,
            version.version_id if version else record.version_id,
            ttl,
            disposition,
        )
        expire = datetime.now(UTC) + timedelta(seconds=ttl)
        await self._record("files.presign_download", record.name, ttl_seconds=str(ttl))
        return file_service_pb2.CreateDownloadUrlResponse(
            url=url, expire_time=timestamps.timestamp(expire)
        )

    async def CreateUploadUrl(
        self, request: file_service_pb2.CreateUploadUrlRequest, context: Any
    ) -> file_service_pb2.CreateUploadUrlResponse:
        principal = current_principal()
        header = request.header
        display_name = validation.display_name(header.display_name, "header.display_name")
        content_type = validation.content_type(header.content_type, "header.content_type")
        size = validation.required_size(
            header.size_bytes,
            min(MAX_URL_UPLOAD_BYTES, self.settings.upload_max_bytes),
            "header.size_bytes",
        )
        digest = validation.sha256(header.sha256, "header.sha256")
        if not digest:
            raise InvalidArgument.field(
                "header.sha256", "is required for presigned uploads", reason="SHA256_REQUIRED"
            )
        labels = validation.labels(header.labels, "header.labels")
        job_id = validation.job_id(header.job, "header.job")
        if header.upload or header.offset:
            raise InvalidArgument.field(
                "header.upload", "presigned uploads cannot be resumed", reason="INVALID_HEADER"
            )
        ttl = self._ttl(request.ttl, "ttl", cap=self.settings.upload_idle_timeout_seconds)
        target = await upload_target(
            self.repo, principal, header.parent, job_id, "file", jobs=self.deps.jobs
        )
        file_id, key = target.file_id, target.object_key
        session = await self.repo.create_upload(
            target.new_upload(
                display_name=display_name,
                content_type=content_type,
                declared_size=size,
                client_sha256=digest,
                labels=labels,
                kind="file",
                via="url",
                bucket=self.storage.bucket,
                part_size=max(size, 1),
                stream_token=None,
            )
        )
        metadata = object_metadata(session, digest)
        url = await self.storage.presign_put(key, content_type, metadata, ttl)
        headers = {"Content-Type": content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})
        expire = datetime.now(UTC) + timedelta(seconds=ttl)
        await self._record("files.upload.presign", session.name, file=f"files/{file_id}")
        return file_service_pb2.CreateUploadUrlResponse(
            upload=session.name, url=url, headers=headers, expire_time=timestamps.timestamp(expire)
        )

    async def CompleteUrlUpload(
        self, request: file_service_pb2.CompleteUrlUploadRequest, context: Any
    ) -> file_service_pb2.CompleteUrlUploadResponse:
        principal = current_principal()
        session = await require_upload(
            self.repo, principal, validation.upload_id(request.upload, "upload")
        )
        if session.via != "url" or session.state != "active":
            raise FailedPrecondition(
                f"{session.name} is not an active presigned upload",
                reason="UPLOAD_NOT_ACTIVE",
                metadata={"state": session.state},
            )
        try:
            head = await self.storage.head(session.object_key)
        except NotFound:
            raise FailedPrecondition(
                "nothing was uploaded to the URL yet", reason="OBJECT_NOT_UPLOADED"
            ) from None
        version_id = str(head.get("VersionId", ""))
        if await self.repo.get_version(session.file_id, version_id) is not None:
            raise FailedPrecondition(
                "nothing was uploaded to the URL yet", reason="OBJECT_NOT_UPLOADED"
            )
        size = int(head.get("ContentLength", -1))
        digest = ""
        if size == session.declared_size:
            digest, size = await self.storage.sha256_of(session.object_key, version_id)
        if size != session.declared_size or digest != session.client_sha256:
            await self.storage.delete_version(session.object_key, version_id)
            await self.repo.finish_upload(session.id, "failed", "verification failed")
            reason = "SIZE_MISMATCH" if size != session.declared_size else "SHA256_MISMATCH"
            raise DataLoss(
                f"the uploaded object does not match the declared size and SHA-256 ({reason})",
                reason=reason,
                metadata={"upload": session.name},
            )
        obj = CommittedObject(
            version_id=version_id, etag=str(head.get("ETag", "")), size_bytes=size, sha256=digest
        )
        try:
            record = await self.repo.commit_upload(session, obj)
        except BaseException:
            await self.storage.delete_version(session.object_key, version_id)
            raise
        await self._record("files.upload", record.name, upload=session.name, via="url")
        return file_service_pb2.CompleteUrlUploadResponse(file=convert.file_to_proto(record))

    # --- versions ----------------------------------------------------------------------

    async def ListFileVersions(
        self, request: file_service_pb2.ListFileVersionsRequest, context: Any
    ) -> file_service_pb2.ListFileVersionsResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "read"
        )
        size = validation.page_size(request.page_size)
        versions, token = await pagination.page(
            "ListFileVersions",
            {"file": record.id},
            request.page_token,
            size,
            lambda after, limit: self.repo.list_versions(record.id, after=after, limit=limit),
            lambda version: (version.create_time, version.version_id),
            pagination.BY_TIME,
        )
        return file_service_pb2.ListFileVersionsResponse(
            versions=[convert.version_to_proto(v, record.version_id) for v in versions],
            next_page_token=token,
        )

    async def RestoreFileVersion(
        self, request: file_service_pb2.RestoreFileVersionRequest, context: Any
    ) -> file_service_pb2.RestoreFileVersionResponse:
        record = await require_file(
            self.repo,
            current_principal(),
            validation.file_id(request.name),
            "write",
            allow_deleted=True,
        )
        if not request.version_id:
            raise InvalidArgument.field("version_id", "is required", reason="VERSION_REQUIRED")
        version = await self.repo.get_version(record.id, request.version_id)
        if version is None:
            raise NotFound(
                f"{record.name} has no version {request.version_id[:128]!r}",
                reason="VERSION_NOT_FOUND",
            )
        copied = await self.storage.copy_version(
            record.object_key, version.version_id, version.size_bytes
        )
        obj = CommittedObject(
            version_id=copied.version_id,
            etag=copied.etag,
            size_bytes=version.size_bytes,
            sha256=version.sha256,
        )
        restored = await self.repo.set_current_version(record.id, obj, version.content_type)
        await self._record(
            "files.restore_version",
            record.name,
            from_version=version.version_id,
            version_id=copied.version_id,
        )
        return file_service_pb2.RestoreFileVersionResponse(file=convert.file_to_proto(restored))

    # --- sharing -----------------------------------------------------------------------

    async def ShareFile(
        self, request: file_service_pb2.ShareFileRequest, context: Any
    ) -> file_service_pb2.ShareFileResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "manage"
        )
        user_id = validation.user_id(request.user)
        role = convert.role_from_proto(request.role)
        if user_id == record.owner_id:
            raise InvalidArgument.field(
                "user", "the owner already has full access", reason="SHARE_WITH_OWNER"
            )
        # Only after the caller's own right to share (PERMISSION_DENIED first), so the answer
        # does not tell a stranger which users exist.
        await self.deps.users.require_user(user_id)
        share = await self.repo.share(record.id, user_id, role)
        await self._record("files.share", record.name, user=request.user, role=role)
        return file_service_pb2.ShareFileResponse(share=convert.share_to_proto(share))

    async def UnshareFile(
        self, request: file_service_pb2.UnshareFileRequest, context: Any
    ) -> file_service_pb2.UnshareFileResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "manage"
        )
        user_id = validation.user_id(request.user)
        if not await self.repo.unshare(record.id, user_id):
            raise NotFound(
                f"{request.user} has no grant on {record.name}", reason="SHARE_NOT_FOUND"
            )
        await self._record("files.unshare", record.name, user=request.user)
        return file_service_pb2.UnshareFileResponse()

    async def ListFileShares(
        self, request: file_service_pb2.ListFileSharesRequest, context: Any
    ) -> file_service_pb2.ListFileSharesResponse:
        record = await require_file(
            self.repo, current_principal(), validation.file_id(request.name), "manage"
        )
        shares = await self.repo.list_shares(record.id)
        return file_service_pb2.ListFileSharesResponse(
            shares=[convert.share_to_proto(s) for s in shares]
        )

    # --- users -------------------------------------------------------------------------

    async def GetUserUsage(
        self, request: file_service_pb2.GetUserUsageRequest, context: Any
    ) -> file_service_pb2.GetUserUsageResponse:
        user_id = validation.user_id(request.user)
        require_user(current_principal(), user_id)
        usage = await self.repo.usage(user_id)
        return file_service_pb2.GetUserUsageResponse(
            user=request.user, file_count=usage.file_count, total_bytes=usage.total_bytes
        )

    async def DeleteUserFiles(
        self, request: file_service_pb2.DeleteUserFilesRequest, context: Any
    ) -> file_service_pb2.DeleteUserFilesResponse:
        principal: Principal = current_principal()
        if not is_privileged(principal):
            raise PermissionDenied(
                "only admins and services may delete a user's files", reason="ADMIN_REQUIRED"
            )
        user_id = validation.user_id(request.user)
        for session in await self.repo.active_uploads_of_user(user_id):
            if await self.repo.finish_upload(session.id, "cancelled", "user deleted") is not None:
                await release_session_objects(self.deps, session)
        # Objects first (a failure leaves the rows, so a retry finds the rest), all of the
        # user's prefix at once: a LIST and a DELETE per 1000 versions, not per file.
        removed = await self.storage.purge_prefix(keys.user_prefix(user_id))
        deleted = await self.repo.purge_user_files(user_id)
        await self._record(
            "files.delete_user_files",
            request.user,
            count=str(deleted),
            object_versions=str(removed),
        )
        return file_service_pb2.DeleteUserFilesResponse(deleted_count=deleted)


def register(servicer: FileServicer) -> Any:
    def add(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((generic_handler(servicer),))

    return add


def object_missing(record: FileRecord, version_id: str | None) -> DataLoss:
    """The error for a file record whose S3 object (version) is gone."""
    return DataLoss(
        f"the stored content of {record.name} is missing from S3 (the object store was wiped "
        "or restored without it); `mediagrid check` lists such files",
        reason="OBJECT_MISSING",
        metadata={"resource": record.name, "version_id": (version_id or "")[:128]},
    )


async def _prepend(first: T | None, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    if first is not None:
        yield first
    async for item in rest:
        yield item
