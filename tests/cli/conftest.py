"""One real suite for every CLI test: ``mediagrid serve all`` in a subprocess, as `make run`.

It serves on a free, non-default port, on a fresh database of the test PostgreSQL and a moto
S3 server of its own, in the dev environment (so the dev administrator of the README
exists). Each test gets a ``Cli``: the real ``mediagrid`` entry point run as a subprocess
with its own working directory and its own HOME / XDG directories (so stored sessions and
resume records never leak between tests), finding the server through
``MEDIAGRID_GRPC_PORT`` only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.proxy import TcpProxy
from tests.support.stores import run_admin, with_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MEDIAGRID = BIN / "mediagrid"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "mediagrid-dev-admin"
PASSWORD = "a long enough test password"
PART = 5 * 1024 * 1024  # the smallest S3 part: interrupted uploads have committed parts early


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrottledProxy(TcpProxy):
    """Forwards at most ``rate`` bytes per second (None: unlimited), to stop mid-upload."""

    rate: float | None = 4 * 1024 * 1024

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                if self.rate:
                    await asyncio.sleep(len(data) / self.rate)
        except (OSError, asyncio.IncompleteReadError):
            return


@dataclass
class Suite:
    port: int
    env: dict[str, str]  # what the server runs with, minus the port the CLI must discover
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Cli:
    """``mediagrid`` as a user runs it: in ``cwd``, with only the port configured.

    Each test has a user of its own (``email``), so listings show only its own files.
    """

    suite: Suite
    cwd: Path
    email: str
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(MEDIAGRID), *args],
            env={**self.env, **extra},
            cwd=self.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mediagrid {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def login(self) -> None:
        self.run("login", "--email", self.email, "--password", PASSWORD)


def client_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        MEDIAGRID_GRPC_PORT=str(port),
        COLUMNS="80",  # what a narrow terminal (or a pipe) gives: no id may be cut
    )
    return env


def wait_serving(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise AssertionError(f"mediagrid serve exited:\n{log.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"never SERVING:\n{log.read_text()}"
            time.sleep(0.3)


@pytest.fixture(scope="package")
def suite(pg_admin_dsn: str) -> Iterator[Suite]:
    from moto.server import ThreadedMotoServer

    # Outside pytest's tmp tree: an embedded PostgreSQL (as root) must traverse it.
    base = Path(tempfile.mkdtemp(prefix="mg-cli-"))
    database = f"mg_cli_{uuid.uuid4().hex[:10]}"
    asyncio.run(run_admin(pg_admin_dsn, f"CREATE DATABASE {database}"))
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, s3_port = s3.get_host_and_port()
    port = free_port()
    env = client_env(base / "server-home", port)
    env.update(
        MEDIAGRID_ENVIRONMENT="dev",
        MEDIAGRID_DATA_DIR=str(base / "data"),
        MEDIAGRID_DATABASE_URL=with_database(pg_admin_dsn, database),
        MEDIAGRID_S3_ENDPOINT_URL=f"http://{host}:{s3_port}",
        MEDIAGRID_AWS_ACCESS_KEY_ID="testing",
        MEDIAGRID_AWS_SECRET_ACCESS_KEY="testing",
        MEDIAGRID_S3_PAYLOAD_SIGNING="false",
        MEDIAGRID_S3_CREATE_BUCKETS="true",
        MEDIAGRID_UPLOAD_PART_SIZE_BYTES=str(PART),
        MEDIAGRID_VIDEO_UPLOAD_PART_SIZE_BYTES=str(PART),
        MEDIAGRID_VIDEO_THUMBNAIL_TIMES_SECONDS="[0.0, 1.0]",
        MEDIAGRID_GRPC_SHUTDOWN_GRACE_SECONDS="2",
        MEDIAGRID_LOG_FORMAT="text",
        # Every test logs in from 127.0.0.1 (an admin login to make its user, then its own):
        # a quick run makes more logins a minute than one address may. The throttle itself
        # is tested in tests/users/test_login_throttle.py.
        MEDIAGRID_LOGIN_ADDRESS_MAX_ATTEMPTS="100000",
    )
    log = base / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(MEDIAGRID), "serve", "all"], env=env, cwd=base, stdout=sink, stderr=sink
        )
    try:
        wait_serving(f"127.0.0.1:{port}", process, log)
        yield Suite(port=port, env=env, log=log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        s3.stop()
        asyncio.run(run_admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        shutil.rmtree(base, ignore_errors=True)


async def create_user(address: str) -> str:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    async with grpc.aio.insecure_channel(address) as channel:
        users = pb_grpc.UserServiceStub(channel)
        admin = await users.Login(
            pb.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD), timeout=30
        )
        await users.CreateUser(
            pb.CreateUserRequest(user=pb.User(email=email, role=pb.ROLE_USER), password=PASSWORD),
            metadata=(("authorization", f"Bearer {admin.token}"),),
            timeout=30,
        )
    return email


@pytest.fixture
def cli(suite: Suite, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    email = asyncio.run(create_user(suite.address))
    return Cli(suite=suite, cwd=work, email=email, env=client_env(home, suite.port))
