"""Raw Upload/Download streams for the S3 scenarios: each stream's outcome is kept as the
client saw it (no client-side resume here: the scenarios decide when to resume)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from mediagrid.files.v1 import file_pb2, file_service_pb2, file_service_pb2_grpc

from tests.faults.scenario import Tally, bearer

CHUNK = 1024 * 1024
MiB = 1024 * 1024


@dataclass
class UploadOutcome:
    upload: str = ""
    file: file_pb2.File | None = None
    committed: int = 0
    error: grpc.aio.AioRpcError | None = None
    failed_after: float = 0.0  # seconds from ``fault_at`` (or the start) to the error
    metadata_values: set[str] = field(default_factory=set)

    @property
    def code(self) -> str:
        return "OK" if self.error is None else str(self.error.code().name)


async def upload(
    stub: file_service_pb2_grpc.FileServiceStub,
    token: str,
    data: bytes,
    *,
    tally: Tally,
    rpc: str = "Upload",
    upload_name: str = "",
    offset: int = 0,
    before_chunk: Callable[[int, UploadOutcome], Awaitable[None]] | None = None,
    deadline: float = 120.0,
    clock: list[float] | None = None,
) -> UploadOutcome:
    """Send ``data[offset:]`` in one stream (a resume when ``upload_name`` is given).

    ``before_chunk(offset, outcome)`` runs before each chunk (a scenario injects its fault
    there and records the moment in ``clock[0]``); ``failed_after`` is measured from it.
    """
    outcome = UploadOutcome(upload=upload_name, committed=offset)
    header = file_pb2.UploadHeader(
        display_name="fault.bin",
        content_type="application/octet-stream",
        size_bytes=len(data),
        upload=upload_name,
        offset=offset,
    )

    async def requests() -> AsyncIterator[file_service_pb2.UploadRequest]:
        yield file_service_pb2.UploadRequest(header=header)
        for start in range(offset, len(data), CHUNK):
            if before_chunk is not None:
                await before_chunk(start, outcome)
            yield file_service_pb2.UploadRequest(data=data[start : start + CHUNK])

    started = time.monotonic()
    try:
        stream = stub.Upload(requests(), metadata=bearer(token), timeout=deadline)
        async for reply in stream:
            if reply.WhichOneof("payload") == "progress":
                outcome.upload = reply.progress.upload
                outcome.committed = reply.progress.committed_bytes
            else:
                outcome.file = reply.file
    except grpc.aio.AioRpcError as exc:
        since = clock[0] if clock else started
        outcome.error = exc
        outcome.failed_after = time.monotonic() - since
        tally.failed(rpc, exc, outcome.failed_after)
        outcome.metadata_values = _error_metadata_values(exc)
        return outcome
    tally.ok(rpc)
    return outcome


def _error_metadata_values(exc: grpc.aio.AioRpcError) -> set[str]:
    from common.grpc_errors import error_info

    info = error_info(exc)
    if info is None:
        return set()
    return {f"{key}={value}" for key, value in info.metadata.items()}


async def download(stub: file_service_pb2_grpc.FileServiceStub, token: str, name: str) -> bytes:
    parts = []
    stream = stub.Download(
        file_service_pb2.DownloadRequest(name=name), metadata=bearer(token), timeout=120
    )
    async for reply in stream:
        if reply.data:
            parts.append(reply.data)
    return b"".join(parts)


async def upload_status(
    stub: file_service_pb2_grpc.FileServiceStub, token: str, name: str, deadline: float = 10.0
) -> file_service_pb2.Upload:
    reply = await stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=name), metadata=bearer(token), timeout=deadline
    )
    return reply.upload
