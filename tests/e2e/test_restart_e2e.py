"""`mediagrid serve` as `make run` starts it (nothing configured: embedded PostgreSQL and
SeaweedFS under MEDIAGRID_DATA_DIR), restarted as a process: stored objects survive like the
rows do; a wiped object store is reported by `mediagrid check`;
`mediagrid legacy import-files` writes into the same store."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import grpc
import pytest
from mediagrid.files.v1 import file_pb2, file_service_pb2, file_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

from tests.files.conftest import chunks, sha, upload_requests
from tests.support.suite_process import ROOT, ChildProcess

DEV_ADMIN = ("admin@example.com", "mediagrid-dev-admin")  # dev mode's bootstrap admin


def serve_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        MEDIAGRID_DATA_DIR=str(data_dir),
        MEDIAGRID_GRPC_PORT="0",
        MEDIAGRID_LOG_FORMAT="text",
        MEDIAGRID_EMBEDDED_WORKER="false",
        MEDIAGRID_GRPC_SHUTDOWN_GRACE_SECONDS="2",
    )
    return env


def mediagrid(*args: str) -> list[str]:
    script = "import sys; from common.cli import main; sys.argv[0] = 'mediagrid'; main()"
    return [sys.executable, "-c", script, *args]


class Served:
    """One `mediagrid serve all` process on the data directory, and a logged-in channel."""

    def __init__(self, tmp: Path, data_dir: Path, run: int) -> None:
        self.child = ChildProcess(
            f"serve-{run}", mediagrid("serve", "all"), serve_env(data_dir), tmp / f"serve-{run}.log"
        )
        self.tmp = tmp
        self.channel: grpc.aio.Channel | None = None
        self.token = ""

    async def __aenter__(self) -> Served:
        await self.child.start(self.tmp)
        address = await self.child.wait_listening()
        await self.child.wait_serving()
        self.channel = grpc.aio.insecure_channel(address)
        users = user_service_pb2_grpc.UserServiceStub(self.channel)
        email, password = DEV_ADMIN
        login = await users.Login(
            user_service_pb2.LoginRequest(email=email, password=password), timeout=30
        )
        self.token = login.token
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.channel is not None:
            await self.channel.close()
        code = await self.child.stop()
        if exc[0] is not None:
            print(self.child.tail(60))
        assert code == 0, self.child.tail()

    @property
    def files(self) -> file_service_pb2_grpc.FileServiceStub:
        assert self.channel is not None
        return file_service_pb2_grpc.FileServiceStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def upload(self, data: bytes) -> file_pb2.File:
        header = file_pb2.UploadHeader(
            display_name="kept.bin", content_type="application/octet-stream", sha256=sha(data)
        )
        responses = [
            r
            async for r in self.files.Upload(
                upload_requests(header, chunks(data, 1024 * 1024)), metadata=self.md, timeout=60
            )
        ]
        return responses[-1].file

    async def download(self, name: str) -> bytes:
        out = bytearray()
        request = file_service_pb2.DownloadRequest(name=name)
        async for response in self.files.Download(request, metadata=self.md, timeout=60):
            out += response.data
        return bytes(out)


async def run_command(tmp: Path, data_dir: Path, name: str, *args: str) -> tuple[int, str]:
    child = ChildProcess(name, mediagrid(*args), serve_env(data_dir), tmp / f"{name}.log")
    await child.start(tmp)
    code = await child.wait(120)
    if code is None:
        child.signal(signal.SIGKILL)
        raise AssertionError(f"{name} did not finish:\n{child.tail()}")
    return code, child.log()


@pytest.mark.slow
async def test_objects_survive_restarts_and_a_wiped_store_is_reported(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    data = os.urandom(3 * 1024 * 1024 + 12345)

    async with Served(tmp_path, data_dir, 1) as served:
        file = await served.upload(data)
        owner = file.owner
    assert (data_dir / "s3-identities.json").stat().st_mode & 0o077 == 0  # the key is private

    legacy = tmp_path / "legacy" / owner.removeprefix("users/")
    legacy.mkdir(parents=True)
    (legacy / "old.txt").write_bytes(b"from the old disk")
    async with Served(tmp_path, data_dir, 2) as served:
        assert await served.download(file.name) == data  # kept across the restart
        # The importer joins the running server's SeaweedFS (one server per data directory).
        code, output = await run_command(
            tmp_path, data_dir, "import", "legacy", "import-files", "--source", str(legacy.parent)
        )
        assert code == 0, output
        listed = await served.files.ListFiles(
            file_service_pb2.ListFilesRequest(), metadata=served.md
        )
        names = {f.display_name: f.name for f in listed.files}
        assert await served.download(names["old.txt"]) == b"from the old disk"

    # The object store is wiped; the records stay. (What the RPCs then answer, DATA_LOSS
    # OBJECT_MISSING, is tested in-process: tests/files/test_store_checks.py.)
    shutil.rmtree(data_dir / "s3")
    code, output = await asyncio.wait_for(
        run_command(tmp_path, data_dir, "check-wiped", "check"), 180
    )
    assert code == 1, output
    assert "have no object in S3" in output and file.name in output
