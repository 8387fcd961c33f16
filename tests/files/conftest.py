"""Fixtures for the files service: a started suite with fixed principals and helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import pytest_asyncio
from mediagrid.files.v1 import file_pb2, files_pb2, files_pb2_grpc

from common.settings import Settings
from tests.support.auth import StaticAuthenticator, bearer, principal
from tests.support.proxy import TcpProxy

MiB = 1024 * 1024
PART = 5 * MiB

PRINCIPALS = {
    "alice": principal("alice"),
    "bob": principal("bob"),
    "carol": principal("carol"),
    "dave": principal("dave"),
    "admin": principal("root", "admin"),
    "svc": principal("svc-users", "service"),
}


@dataclass
class Files:
    """A running files service and a stub; ``md(who)`` is the call metadata of a principal."""

    stub: files_pb2_grpc.FileServiceStub
    ctx: Any
    server: Any
    channel: grpc.aio.Channel

    @staticmethod
    def md(who: str) -> tuple[tuple[str, str], ...]:
        return bearer(who)

    async def upload(
        self,
        data: bytes,
        who: str = "alice",
        chunk: int = MiB,
        **header: Any,
    ) -> tuple[file_pb2.File, list[file_pb2.UploadProgress]]:
        header.setdefault("display_name", "data.bin")
        header.setdefault("content_type", "application/octet-stream")
        responses = [
            r
            async for r in self.stub.Upload(
                upload_requests(file_pb2.UploadHeader(**header), chunks(data, chunk)),
                metadata=self.md(who),
            )
        ]
        assert responses[-1].WhichOneof("payload") == "file"
        return responses[-1].file, [r.progress for r in responses[:-1]]

    async def download(self, name: str, who: str = "alice", **kwargs: Any) -> bytes:
        out = bytearray()
        async for response in self.stub.Download(
            files_pb2.DownloadRequest(name=name, **kwargs), metadata=self.md(who)
        ):
            out += response.data
        return bytes(out)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def upload_requests(
    header: file_pb2.UploadHeader, data: Iterable[bytes]
) -> AsyncIterator[files_pb2.UploadRequest]:
    yield files_pb2.UploadRequest(header=header)
    for piece in data:
        yield files_pb2.UploadRequest(data=piece)


async def handshake_upload(
    files: Files, header: file_pb2.UploadHeader, data: bytes, who: str = "alice"
) -> list[files_pb2.UploadResponse]:
    """Send the header, wait for the server's first answer, then the data (as clients should)."""
    call = files.stub.Upload(metadata=files.md(who))
    await call.write(files_pb2.UploadRequest(header=header))
    first = await call.read()  # raises the call's error when the header was refused
    assert first is not grpc.aio.EOF
    responses = [first]
    for piece in chunks(data, MiB):
        await call.write(files_pb2.UploadRequest(data=piece))
    await call.done_writing()
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


async def start_files(suite: Any, **overrides: Any) -> Files:
    settings: dict[str, Any] = {
        "upload_part_size_bytes": PART,
        "upload_concurrency": 3,
        "upload_progress_interval_seconds": 0.0,
    }
    settings.update(overrides)
    server, ctx, channel = await suite(
        "files", authenticator=StaticAuthenticator(PRINCIPALS), **settings
    )
    return Files(files_pb2_grpc.FileServiceStub(channel), ctx, server, channel)


@pytest_asyncio.fixture
async def files(suite: Any) -> Files:
    return await start_files(suite)


async def upload_outcome(
    files: Files, messages: list[files_pb2.UploadRequest], who: str = "alice"
) -> tuple[grpc.StatusCode, str, list[files_pb2.UploadResponse]]:
    """Send ``messages`` with the write API; return (status code, ErrorInfo reason, responses).

    A write into a call the server already ended fails; the call's own status is what counts.
    """
    from common.grpc_errors import error_info

    call = files.stub.Upload(metadata=files.md(who))
    responses: list[files_pb2.UploadResponse] = []
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except Exception:  # the write lost the race with the server's status; read it below
        pass
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            responses.append(response)
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        return exc.code(), info.reason if info else "", responses
    return await call.code(), "", responses


def header_msg(**fields: Any) -> files_pb2.UploadRequest:
    fields.setdefault("display_name", "x.bin")
    return files_pb2.UploadRequest(header=file_pb2.UploadHeader(**fields))


def data_msgs(data: bytes, size: int = MiB) -> list[files_pb2.UploadRequest]:
    return [files_pb2.UploadRequest(data=piece) for piece in chunks(data, size)]


# Short S3 bounds for fault tests, so that the scenarios stay short.
CALL_BOUND = 4.0
TRANSFER_BOUND = 4.0


@pytest_asyncio.fixture
async def s3_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    """A fault proxy in front of the lane's S3 (see ``start_behind``)."""
    target = urlsplit(settings.s3_endpoint_url or "")
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def behind(proxy: TcpProxy, **overrides: Any) -> dict[str, Any]:
    """Settings overrides of a suite whose S3 is reached through ``proxy``, short bounds."""
    settings: dict[str, Any] = {
        "s3_endpoint_url": f"http://127.0.0.1:{proxy.port}",
        "s3_call_timeout_seconds": CALL_BOUND,
        "s3_transfer_timeout_seconds": TRANSFER_BOUND,
    }
    settings.update(overrides)
    return settings


async def start_behind(suite: Any, proxy: TcpProxy, **overrides: Any) -> Files:
    """The files service with its S3 behind ``proxy``."""
    return await start_files(suite, **behind(proxy, **overrides))


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """The integration lane: SeaweedFS (or real AWS S3) instead of moto (tests/README.md)."""
    return store_settings
