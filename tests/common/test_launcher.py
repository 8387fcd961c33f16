"""The launcher: embedded PostgreSQL and S3 when nothing is configured, nothing extra otherwise."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.aws import AwsClients
from common.errors import Unavailable
from common.launcher import launched
from common.server import PortInUse, SuiteServer
from common.settings import BUCKET_PURPOSES, Settings

ROOT = Path(__file__).resolve().parents[2]
MEDIAGRID = Path(sys.executable).parent / "mediagrid"


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A data dir outside pytest's tmp tree.

    As root, pgserver runs PostgreSQL as the user ``pgserver``, which must traverse every
    parent of the data directory; pytest resets /tmp/pytest-of-root to 0700 whenever a
    session starts (other runs on this machine included), which would lock it out.
    """
    path = Path(tempfile.mkdtemp(prefix="mg-state-"))
    try:
        yield path / "state"
    finally:
        shutil.rmtree(path, ignore_errors=True)


SERVING = health_pb2.HealthCheckResponse.SERVING


def unconfigured(data_dir: Path, **overrides: object) -> Settings:
    """Dev settings with no database URL and no S3 endpoint: everything embedded."""
    values: dict[str, object] = {
        "environment": "dev",
        "data_dir": data_dir,
        "grpc_port": 0,
        "grpc_shutdown_grace_seconds": 1,
        "health_check_interval_seconds": 0.5,
        "log_format": "text",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def health_status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(response.status)


async def test_embedded_suite_serves_and_keeps_database_rows_across_restarts(
    state_dir: Path,
) -> None:
    settings = unconfigured(state_dir)
    assert settings.embedded_database and settings.s3_is_embedded

    async with launched(settings, specs=[], port=0) as (server, _ctx, effective):
        assert await health_status(server.address) == SERVING
        assert effective.database_url is not None
        assert effective.s3_endpoint_url is not None
        assert effective.s3_endpoint_url.startswith("http://127.0.0.1:")
        conn = await asyncpg.connect(effective.database_dsn())
        try:
            assert await conn.fetchval("SELECT current_database()") == "mediagrid"
            await conn.execute("CREATE TABLE public.scratch (note text)")
            await conn.execute("INSERT INTO public.scratch VALUES ('kept across restarts')")
        finally:
            await conn.close()
        async with AwsClients(effective).s3() as s3:
            for purpose in BUCKET_PURPOSES:
                versioning = await s3.get_bucket_versioning(Bucket=settings.bucket(purpose))
                assert versioning["Status"] == "Enabled"
    assert (state_dir / "pgdata" / "PG_VERSION").is_file()

    async with launched(settings, specs=[], port=0) as (server, _ctx, effective):
        assert await health_status(server.address) == SERVING
        conn = await asyncpg.connect(effective.database_dsn())
        try:
            assert await conn.fetchval("SELECT note FROM public.scratch") == "kept across restarts"
        finally:
            await conn.close()
    # Stopped, not orphaned: PostgreSQL removes postmaster.pid when it shuts down.
    assert not (state_dir / "pgdata" / "postmaster.pid").exists()


async def test_a_configured_database_that_does_not_answer_is_an_error_not_a_fallback(
    tmp_path: Path, s3_endpoint: str
) -> None:
    settings = unconfigured(
        tmp_path / "state",
        database_url="postgresql://postgres@127.0.0.1:1/nothing",
        db_connect_attempts=2,
        db_connect_backoff_seconds=0.01,
        s3_endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with pytest.raises(Unavailable, match="unreachable after 2 attempts"):
        async with launched(settings, specs=[], port=0):
            pytest.fail("the suite must not start without its database")
    assert not (tmp_path / "state" / "pgdata").exists()


async def list_buckets(settings: Settings) -> set[str]:
    async with AwsClients(settings).s3() as s3:
        return {b["Name"] for b in (await s3.list_buckets()).get("Buckets", [])}


async def test_a_configured_s3_endpoint_gets_no_buckets_created(
    settings: Settings, tmp_path: Path
) -> None:
    configured = settings.model_copy(update={"data_dir": tmp_path, "environment": "dev"})
    async with launched(configured, specs=[], port=0) as (server, _ctx, effective):
        assert effective.s3_endpoint_url == settings.s3_endpoint_url
        assert await health_status(server.address) == SERVING
    assert await list_buckets(configured) == set()


async def test_s3_create_buckets_creates_versioned_buckets_on_a_configured_endpoint(
    settings: Settings, tmp_path: Path
) -> None:
    configured = settings.model_copy(update={"data_dir": tmp_path, "s3_create_buckets": True})
    async with launched(configured, specs=[], port=0):
        pass
    assert await list_buckets(configured) == {configured.bucket(p) for p in BUCKET_PURPOSES}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket listens on for the test's duration."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_serve_on_a_busy_port_is_a_one_line_error_before_anything_starts(
    busy_port: int, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")} | {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        "MEDIAGRID_GRPC_PORT": str(busy_port),
        "MEDIAGRID_DATA_DIR": str(state),
        "MEDIAGRID_LOG_FORMAT": "text",
    }
    done = subprocess.run(
        [str(MEDIAGRID), "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no log lines, no login hint
    assert f"cannot listen on 127.0.0.1:{busy_port}" in lines[0]
    assert "MEDIAGRID_GRPC_PORT" in lines[0]  # says how to pick another port
    assert done.stdout == ""
    # No embedded PostgreSQL was started: it would have created its data directory.
    assert not state.exists()


async def test_launched_binds_the_port_before_the_embedded_stores(
    busy_port: int, state_dir: Path
) -> None:
    settings = unconfigured(state_dir, grpc_port=busy_port)
    assert settings.embedded_database and settings.s3_is_embedded
    with pytest.raises(PortInUse, match=f"127.0.0.1:{busy_port}"):
        async with launched(settings, specs=[]):
            pytest.fail("the suite must not start on a busy port")
    assert not await asyncio.to_thread(state_dir.exists)


async def test_a_bound_server_that_never_started_gives_its_port_back(state_dir: Path) -> None:
    server = SuiteServer(unconfigured(state_dir))
    port = server.bind(0)
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))
    await server.stop()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))  # free again
