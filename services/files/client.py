"""A small async Python client for the FileService, for other services and the CLI.

``upload`` resumes by itself after a broken stream (it asks the server for the committed
offset and continues from there: seekable sources are re-read from that offset, other
streams keep the not-yet-committed bytes in a replay buffer, bounded by what the server
holds in flight). Given a ``ResumeStore`` (``services/files/resume.py``), an upload of a
local path also resumes across process runs: after Ctrl-C or a crash, uploading the same
unchanged file again continues its session from the committed offset. ``video=True``
uploads through ``VideoService.UploadVideo`` (which starts probing and thumbnails).
``download`` resumes from the bytes already written and checks the SHA-256 of whole-file
downloads. Unary calls carry a deadline; retryable failures are
retried with exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)

from common import channels
from common.grpc_errors import error_info
from common.resilience import backoff_delay
from common.settings import Settings
from services.files import wire
from services.files.resume import ResumeKey, ResumeStore, resume_key

T = TypeVar("T")
CHUNK = 1024 * 1024  # the recommended data message size
MAX_MESSAGE = 8 * 1024 * 1024

# Failures after which the same request may succeed: the connection or the server went away.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


@dataclass(frozen=True)
class UploadProgress:
    upload: str
    received_bytes: int
    committed_bytes: int
    parts_completed: int
    total_bytes: int | None
    # Every byte is sent; the server is storing the last parts and committing. It reports
    # nothing more until the file is committed, so a progress bar says so here.
    sending_done: bool = False


ProgressCallback = Callable[[UploadProgress], None]


class UploadFailed(Exception):
    """The upload cannot continue (for example a non-seekable source lost bytes)."""


def open_channel(
    address: str, *, max_message_bytes: int = MAX_MESSAGE, settings: Settings | None = None
) -> grpc.aio.Channel:
    """A channel tuned for file transfer: message limits and keepalive for long streams;
    TLS as ``settings`` (default: the environment's) say."""
    return channels.open_channel(
        address,
        settings,
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ],
    )


def _retryable(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() in RETRYABLE:
        return True
    info = error_info(exc)
    return info is not None and info.reason in ("WRONG_OFFSET", "UPLOAD_SUPERSEDED")


class _Source:
    """Bytes to upload, re-readable from any offset the server has not committed yet."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.seekable = stream.seekable()
        self.start = stream.tell() if self.seekable else 0
        self.replay = bytearray()  # non-seekable: bytes [replay_from, position)
        self.replay_from = 0
        self.position = 0

    def rewind(self, offset: int) -> None:
        if self.seekable:
            self.stream.seek(self.start + offset)
            self.position = offset
            return
        if offset < self.replay_from or offset > self.position:
            raise UploadFailed(
                f"cannot resume at {offset}: the stream is not seekable and those bytes are gone"
            )
        del self.replay[: offset - self.replay_from]
        self.replay_from = offset

    def committed(self, offset: int) -> None:
        if not self.seekable and offset > self.replay_from:
            del self.replay[: offset - self.replay_from]
            self.replay_from = offset

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        if not self.seekable and self.replay:
            replay = bytes(self.replay)
            for start in range(0, len(replay), size):
                yield replay[start : start + size]
        while True:
            data = await asyncio.to_thread(self.stream.read, size)
            if not data:
                return
            if not self.seekable:
                self.replay += data
            self.position += len(data)
            yield data


class FilesClient:
    """``FilesClient(channel, token=...)``; every call sends ``authorization: Bearer``."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff: float = 0.2,
        chunk_size: int = CHUNK,
        server: str = "",
    ) -> None:
        self.stub = file_service_pb2_grpc.FileServiceStub(channel)
        # Download with data messages as memoryviews of the received bytes (no parse, no copy).
        self._download = wire.download_method(channel)
        self.video_stub = video_service_pb2_grpc.VideoServiceStub(channel)
        # Names the server in resume records: a session is resumed only where it was opened.
        self.server = server
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.chunk_size = chunk_size

    async def _unary(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await method(request, metadata=self.metadata, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                if attempt == self.max_attempts:
                    raise
                await asyncio.sleep(backoff_delay(attempt, self.backoff))
        raise AssertionError("unreachable")

    # --- simple calls ------------------------------------------------------------------

    async def get(self, name: str) -> file_pb2.File:
        response: file_service_pb2.GetFileResponse = await self._unary(
            self.stub.GetFile, file_service_pb2.GetFileRequest(name=name)
        )
        return response.file

    async def list(
        self,
        *,
        parent: str = "",
        job: str = "",
        content_type_prefix: str = "",
        page_size: int = 100,
    ) -> AsyncIterator[file_pb2.File]:
        token = ""
        while True:
            page = await self._unary(
                self.stub.ListFiles,
                file_service_pb2.ListFilesRequest(
                    parent=parent,
                    job=job,
                    content_type_prefix=content_type_prefix,
                    page_size=page_size,
                    page_token=token,
                ),
            )
            for file in page.files:
                yield file
            token = page.next_page_token
            if not token:
                return

    async def upload_status(self, upload: str) -> file_service_pb2.Upload:
        response: file_service_pb2.GetUploadStatusResponse = await self._unary(
            self.stub.GetUploadStatus, file_service_pb2.GetUploadStatusRequest(name=upload)
        )
        return response.upload

    async def cancel_upload(self, upload: str) -> file_service_pb2.Upload:
        response: file_service_pb2.CancelUploadResponse = await self._unary(
            self.stub.CancelUpload, file_service_pb2.CancelUploadRequest(name=upload)
        )
        return response.upload

    # --- upload ------------------------------------------------------------------------

    async def upload(
        self,
        source: str | Path | IO[bytes],
        *,
        display_name: str | None = None,
        content_type: str | None = None,
        sha256: str | None = None,
        job: str = "",
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        video: bool = False,
        resume: ResumeStore | None = None,
    ) -> file_pb2.File:
        """Upload a path or a binary stream; resumes by itself after a broken stream.

        With ``resume`` (paths only) the session is recorded there and an unfinished session
        of the same unchanged file is continued instead of starting over.
        """
        if isinstance(source, str | Path):
            path = Path(source)
            key = None
            if resume is not None:
                kind = "video" if video else "file"
                key = await asyncio.to_thread(
                    resume_key, path, server=self.server, kind=kind, parent=parent
                )
            stream = await asyncio.to_thread(path.open, "rb")
            with stream:
                digest = sha256 if sha256 is not None else await asyncio.to_thread(_hash_file, path)
                header = self._header(
                    stream,
                    display_name=display_name or path.name,
                    content_type=content_type or mimetypes.guess_type(path.name)[0] or "",
                    sha256=digest,
                    job=job,
                    parent=parent,
                    labels=labels,
                )
                return await self._upload(
                    stream, header, on_progress, video, resume if key else None, key
                )
        header = self._header(
            source,
            display_name=display_name,
            content_type=content_type,
            sha256=sha256,
            job=job,
            parent=parent,
            labels=labels,
        )
        return await self._upload(source, header, on_progress, video, None, None)

    @staticmethod
    def _header(
        stream: IO[bytes],
        *,
        display_name: str | None,
        content_type: str | None,
        sha256: str | None,
        job: str,
        parent: str,
        labels: Mapping[str, str] | None,
    ) -> file_pb2.UploadHeader:
        return file_pb2.UploadHeader(
            display_name=display_name or "upload.bin",
            content_type=content_type or "",
            size_bytes=_remaining_size(stream) or 0,
            sha256=sha256 or "",
            job=job,
            parent=parent,
            labels=dict(labels or {}),
        )

    async def _upload(
        self,
        stream: IO[bytes],
        header: file_pb2.UploadHeader,
        on_progress: ProgressCallback | None,
        video: bool,
        resume: ResumeStore | None,
        key: ResumeKey | None,
    ) -> file_pb2.File:
        state = _UploadState(_Source(stream), _remaining_size(stream), on_progress)
        transfer = _VIDEO if video else _FILE
        if resume is not None and key is not None:
            recorded = await asyncio.to_thread(resume.get, key)
            if recorded:
                found = await self._resumable(recorded)
                if isinstance(found, file_pb2.File):  # committed before the record was dropped
                    await asyncio.to_thread(resume.remove, key)
                    return found
                if found is None:
                    await asyncio.to_thread(resume.remove, key)
                else:
                    state.upload = recorded
                    state.source.rewind(found)
                    header = file_pb2.UploadHeader(upload=recorded, offset=found)

            def remember(upload: str) -> None:
                resume.put(key, upload)

            state.on_session = remember
        for attempt in range(1, self.max_attempts + 1):
            try:
                file = await self._upload_once(transfer, header, state)
            except grpc.aio.AioRpcError as exc:
                if not _retryable(exc) or attempt == self.max_attempts:
                    raise
                await asyncio.sleep(backoff_delay(attempt, self.backoff))
                header = await self._resume_header(header, state, exc)
                continue
            if resume is not None and key is not None:
                await asyncio.to_thread(resume.remove, key)
            return file
        raise AssertionError("unreachable")

    async def _resumable(self, upload: str) -> int | file_pb2.File | None:
        """The committed offset of an active session, its file once committed, else None."""
        try:
            status = await self.upload_status(upload)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            raise
        if status.state == file_service_pb2.UPLOAD_STATE_ACTIVE:
            return int(status.committed_bytes)
        if status.state == file_service_pb2.UPLOAD_STATE_COMPLETED and status.file:
            return await self.get(status.file)
        return None

    async def _resume_header(
        self, header: file_pb2.UploadHeader, state: _UploadState, exc: grpc.aio.AioRpcError
    ) -> file_pb2.UploadHeader:
        if not state.upload:
            state.source.rewind(0)  # the session never started: start over
            return header
        info = error_info(exc)
        if info is not None and info.reason == "WRONG_OFFSET":
            offset = int(info.metadata["committed_offset"])
        else:
            offset = (await self.upload_status(state.upload)).committed_bytes
        state.source.rewind(offset)
        return file_pb2.UploadHeader(upload=state.upload, offset=offset)

    async def _upload_once(
        self, transfer: _Transfer, header: file_pb2.UploadHeader, state: _UploadState
    ) -> file_pb2.File:
        stub = self.video_stub if transfer is _VIDEO else self.stub
        call = getattr(stub, transfer.method)(metadata=self.metadata)
        try:
            await call.write(transfer.request(header=header))
            # Wait for the server to accept the header before sending any data: a refused
            # header then surfaces as its own status, not as a failed write.
            first = await call.read()
            if first is grpc.aio.EOF:
                await _raise_status(call)
            state.seen(first.progress)
            reader = asyncio.create_task(_read_responses(call, state))
            try:
                async for chunk in state.source.chunks(self.chunk_size):
                    if reader.done():
                        break
                    await call.write(transfer.request(data=chunk))
                if not reader.done():
                    await call.done_writing()
                    state.sending_done()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the call ended; its status comes from the reader
            return await reader
        finally:
            if not call.done():
                call.cancel()

    # --- download ----------------------------------------------------------------------

    async def download(
        self,
        name: str,
        dest: str | Path | IO[bytes],
        *,
        version: str = "",
        offset: int = 0,
        length: int = 0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> file_pb2.File:
        """Write a file (or a byte range of it) to ``dest``; resumes after broken streams."""
        if isinstance(dest, str | Path):
            stream = await asyncio.to_thread(Path(dest).open, "wb")
            with stream:
                return await self.download(
                    name,
                    stream,
                    version=version,
                    offset=offset,
                    length=length,
                    on_progress=on_progress,
                )
        written = 0
        digest = hashlib.sha256()
        record: file_pb2.File | None = None
        for attempt in range(1, self.max_attempts + 1):
            remaining = (length - written) if length else 0
            request = file_service_pb2.DownloadRequest(
                name=name,
                version_id=version or (record.version_id if record else ""),
                offset=offset + written,
                length=remaining,
            )
            try:
                async for response in self._download(request, metadata=self.metadata):
                    if isinstance(response, memoryview):
                        data: bytes | memoryview = response
                    else:
                        if response.HasField("file") and record is None:
                            record = response.file
                        data = response.data
                    if data:
                        # Hashing beside the write, off the loop: hashlib lets go of the
                        # GIL, so the loop keeps receiving meanwhile.
                        await asyncio.to_thread(_write_hashed, dest, digest, data)
                        written += len(data)
                        if on_progress is not None and record is not None:
                            on_progress(written, length or record.size_bytes - offset)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.max_attempts:
                    raise
                await asyncio.sleep(backoff_delay(attempt, self.backoff))
        assert record is not None
        if offset == 0 and length == 0 and digest.hexdigest() != record.sha256:
            raise UploadFailed(f"downloaded bytes do not match {record.name}'s SHA-256")
        return record


@dataclass(frozen=True)
class _Transfer:
    """FileService.Upload and VideoService.UploadVideo: one protocol (a ``payload`` oneof of
    ``header`` then ``data``, answered by ``progress`` then ``file``), two message types."""

    method: str
    request: Callable[..., Any]


_FILE = _Transfer("Upload", file_service_pb2.UploadRequest)
_VIDEO = _Transfer("UploadVideo", video_service_pb2.UploadVideoRequest)


class _UploadState:
    def __init__(
        self, source: _Source, total: int | None, callback: ProgressCallback | None
    ) -> None:
        self.source = source
        self.total = total
        self.callback = callback
        self.upload = ""
        self.on_session: Callable[[str], None] | None = None
        self.last: UploadProgress | None = None

    def seen(self, progress: file_pb2.UploadProgress) -> None:
        if not self.upload and progress.upload:
            self.upload = progress.upload
            if self.on_session is not None:
                self.on_session(progress.upload)
        self.source.committed(progress.committed_bytes)
        self.last = UploadProgress(
            progress.upload,
            progress.received_bytes,
            progress.committed_bytes,
            progress.parts_completed,
            self.total,
        )
        if self.callback is not None:
            self.callback(self.last)

    def sending_done(self) -> None:
        if self.callback is not None and self.last is not None:
            self.callback(dataclasses.replace(self.last, sending_done=True))


async def _read_responses(call: Any, state: _UploadState) -> file_pb2.File:
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            await _raise_status(call)
        if response.WhichOneof("payload") == "progress":
            state.seen(response.progress)
        else:
            return response.file  # type: ignore[no-any-return]


async def _raise_status(call: Any) -> None:
    code = await call.code()
    raise grpc.aio.AioRpcError(
        code, await call.initial_metadata(), await call.trailing_metadata(), await call.details()
    )


def _write_hashed(dest: IO[bytes], digest: Any, data: bytes | memoryview) -> None:
    dest.write(data)
    digest.update(data)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _remaining_size(stream: IO[bytes]) -> int | None:
    if isinstance(stream, io.BytesIO):
        return len(stream.getbuffer()) - stream.tell()
    try:
        if stream.seekable():
            here = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(here)
            return end - here
    except OSError:
        return None
    return None
