"""Fixtures for the files service: a started suite with fixed principals and helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest_asyncio
from mediagrid.files.v1 import file_pb2, files_pb2, files_pb2_grpc

from tests.support.auth import StaticAuthenticator, bearer, principal

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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


@pytest_asyncio.fixture
async def files(suite: Any) -> Files:
    server, ctx, channel = await suite(
        "files",
        authenticator=StaticAuthenticator(PRINCIPALS),
        upload_part_size_bytes=PART,
        upload_concurrency=3,
        upload_progress_interval_seconds=0.0,
    )
    return Files(files_pb2_grpc.FileServiceStub(channel), ctx, server, channel)
