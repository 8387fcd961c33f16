"""The Python client resumes uploads and downloads across connections cut mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from services.files.client import FilesClient, UploadProgress, open_channel
from tests.files.conftest import PART, Files, random_bytes, sha


class CuttingProxy:
    """A TCP proxy that drops the first connection(s) after ``cut_after`` bytes each way."""

    def __init__(self, target_port: int, cuts: list[int]) -> None:
        self.target_port = target_port
        self.cuts = list(cuts)
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        budget = self.cuts.pop(0) if self.cuts else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        counted = [0]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    counted[0] += len(data)
                    if budget is not None and counted[0] > budget:
                        break
                    dst.write(data)
                    await dst.drain()
            for w in (writer, up_writer):
                w.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


class OneWayStream(io.RawIOBase):
    """A non-seekable stream (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        return self.inner.read(size)


async def proxied_client(files: Files, cuts: list[int]) -> tuple[FilesClient, CuttingProxy, Any]:
    proxy = CuttingProxy(files.server.port, cuts)
    port = await proxy.start()
    channel = open_channel(f"127.0.0.1:{port}")
    return FilesClient(channel, token="alice", backoff=0.05), proxy, channel


@pytest.mark.parametrize("seekable", [True, False])
async def test_upload_resumes_after_cut_connection(
    files: Files, tmp_path: Path, seekable: bool
) -> None:
    data = random_bytes(3 * PART + 123)
    client, proxy, channel = await proxied_client(files, [int(1.7 * PART), int(1.2 * PART)])
    seen: list[UploadProgress] = []
    try:
        if seekable:
            path = tmp_path / "big.bin"
            path.write_bytes(data)
            file = await client.upload(path, on_progress=seen.append)
        else:
            file = await client.upload(
                OneWayStream(data), sha256=sha(data), on_progress=seen.append
            )
    finally:
        await channel.close()
        await proxy.close()
    assert proxy.connections >= 3  # two cut connections, then one that finished
    assert file.sha256 == sha(data) and file.size_bytes == len(data)
    assert seen and seen[-1].received_bytes == len(data)
    assert await files.download(file.name) == data


async def test_download_resumes_after_cut_connection(files: Files, tmp_path: Path) -> None:
    data = random_bytes(3 * PART)
    file, _ = await files.upload(data)
    client, proxy, channel = await proxied_client(files, [2 * PART])
    try:
        record = await client.download(file.name, tmp_path / "out.bin")
        part = io.BytesIO()
        await client.download(file.name, part, offset=PART - 3, length=10)
    finally:
        await channel.close()
        await proxy.close()
    assert proxy.connections >= 2
    assert (tmp_path / "out.bin").read_bytes() == data
    assert record.sha256 == sha(data)
    assert part.getvalue() == data[PART - 3 : PART + 7]


async def test_client_lists_and_reports_errors(files: Files) -> None:
    await files.upload(b"one", display_name="one.txt")
    channel = open_channel(files.server.address)
    try:
        client = FilesClient(channel, token="alice")
        names = [f.display_name async for f in client.list(page_size=1)]
        assert names == ["one.txt"]
        with pytest.raises(Exception) as caught:
            await FilesClient(channel, token="dave").get((await client.list().__anext__()).name)
        assert "PERMISSION_DENIED" in str(caught.value)
    finally:
        await channel.close()
