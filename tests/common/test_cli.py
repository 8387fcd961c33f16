"""The ``mediagrid`` command in a real subprocess: serve stops on SIGTERM, check names problems."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from common.aws import AwsClients, ensure_bucket
from common.registry import SERVICES
from common.settings import Settings


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


ROOT = Path(__file__).resolve().parents[2]
MEDIAGRID = Path(sys.executable).parent / "mediagrid"


def available_services() -> list[str]:
    """Services whose code is in this checkout (all of them once every branch is merged)."""
    found = []
    for name in SERVICES:
        try:
            if importlib.util.find_spec(f"services.{name}.app") is not None:
                found.append(name)
        except ModuleNotFoundError:
            continue
    return found


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
    env.update(variables)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MEDIAGRID), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def wait_serving(address: str, process: asyncio.subprocess.Process, deadline: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                _, err = await process.communicate()
                raise AssertionError(f"mediagrid serve exited before serving:\n{err.decode()}")
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "mediagrid serve did not become SERVING"
            await asyncio.sleep(0.3)


async def test_serve_reaches_serving_and_exits_zero_on_sigterm(
    tmp_path: Path, state_dir: Path
) -> None:
    port = free_port()
    env = clean_env(
        MEDIAGRID_DATA_DIR=str(state_dir),
        MEDIAGRID_GRPC_PORT=str(port),
        MEDIAGRID_GRPC_SHUTDOWN_GRACE_SECONDS="2",
        MEDIAGRID_LOG_FORMAT="json",
    )
    # Only the services present in this checkout, so the test also runs on partial branches.
    script = (
        "import common.registry as r, sys; "
        f"r.SERVICES = {{k: v for k, v in r.SERVICES.items() if k in {available_services()!r}}}; "
        "from common.cli import main; sys.argv[0] = 'mediagrid'; main()"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        "serve",
        "all",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_serving(f"127.0.0.1:{port}", process, time.monotonic() + 90)
        probe = await asyncio.create_subprocess_exec(
            str(MEDIAGRID), "health", env=env, stdout=asyncio.subprocess.PIPE
        )
        probe_out, _ = await asyncio.wait_for(probe.communicate(), timeout=60)
        assert probe.returncode == 0
        assert probe_out.decode().strip() == f"127.0.0.1:{port} (overall): SERVING"
        process.send_signal(signal.SIGTERM)
        _out, raw_err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    err = raw_err.decode()
    assert process.returncode == 0, err
    assert f"mediagrid listening on 127.0.0.1:{port}" in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any(m.startswith("embedded S3 is SeaweedFS at http://127.0.0.1:") for m in messages)
    assert any(m == "embedded S3 (SeaweedFS) stopped" for m in messages)
    assert any(m.startswith("signal received") for m in messages)
    assert any(m == "embedded PostgreSQL stopped" for m in messages)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_invalid_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli("serve", env=clean_env(MEDIAGRID_GRPC_PORT="not-a-port"), cwd=tmp_path)
    assert result.returncode == 2
    assert "MEDIAGRID_GRPC_PORT" in result.stderr


def test_check_rejects_a_bad_bucket_prefix(tmp_path: Path) -> None:
    result = run_cli("check", env=clean_env(MEDIAGRID_BUCKET_PREFIX="Bad_Prefix"), cwd=tmp_path)
    assert result.returncode == 2
    assert "MEDIAGRID_BUCKET_PREFIX" in result.stderr


def test_serve_with_an_unreachable_database_exits_1_without_falling_back(tmp_path: Path) -> None:
    env = clean_env(
        MEDIAGRID_DATA_DIR=str(tmp_path / "state"),
        MEDIAGRID_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x",
        MEDIAGRID_DB_CONNECT_ATTEMPTS="2",
        MEDIAGRID_DB_CONNECT_BACKOFF_SECONDS="0.01",
        MEDIAGRID_GRPC_PORT=str(free_port()),
    )
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "is unreachable after 2 attempts" in result.stderr
    assert not (tmp_path / "state" / "pgdata").exists()


def test_check_reports_an_unreachable_database(tmp_path: Path) -> None:
    env = clean_env(
        MEDIAGRID_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x",
        MEDIAGRID_DB_CONNECT_ATTEMPTS="2",
        MEDIAGRID_DB_CONNECT_BACKOFF_SECONDS="0.01",
    )
    result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "database unreachable" in result.stderr
    assert "MEDIAGRID_DATABASE_URL" in result.stderr


def configured_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        MEDIAGRID_DATA_DIR=str(tmp_path / "state"),
        MEDIAGRID_DATABASE_URL=settings.database_dsn(),
        MEDIAGRID_S3_ENDPOINT_URL=str(settings.s3_endpoint_url),
        MEDIAGRID_AWS_ACCESS_KEY_ID="testing",
        MEDIAGRID_AWS_SECRET_ACCESS_KEY="testing",
        MEDIAGRID_S3_PAYLOAD_SIGNING="false",
    )


async def test_check_names_a_missing_bucket_then_passes_once_it_exists(
    settings: Settings, tmp_path: Path
) -> None:
    env = configured_env(settings, tmp_path)
    missing = await asyncio.to_thread(run_cli, "check", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "mediagrid-dev-files does not exist" in missing.stderr
    assert "MEDIAGRID_BUCKET_PREFIX" in missing.stderr

    async with AwsClients(settings).s3() as s3:
        await ensure_bucket(s3, "mediagrid-dev-files")
    passing = await asyncio.to_thread(run_cli, "check", env=env, cwd=tmp_path)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "write/read/delete ok" in passing.stdout
    async with AwsClients(settings).s3() as s3:
        versions = await s3.list_object_versions(Bucket="mediagrid-dev-files")
    # The round trip removed its object version itself: no object, no delete marker left.
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")
    assert not (tmp_path / "state").exists(), "a configured setup must not start embedded stores"


async def test_check_lists_pending_migrations(
    settings: Settings, pg_admin_dsn: str, tmp_path: Path
) -> None:
    name = f"mg_empty_{os.getpid()}"
    head, sep, query = pg_admin_dsn.partition("?")  # keep ?host=... of a unix-socket DSN
    empty_dsn = f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        empty = settings.model_copy(update={"database_url": SecretStr(empty_dsn)})
        result = await asyncio.to_thread(
            run_cli, "check", env=configured_env(empty, tmp_path), cwd=tmp_path
        )
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    assert result.returncode == 1
    pending = [s for s in SERVICES.values() if s.migrations.is_dir()]
    for spec in pending:
        assert f"migrations: {spec.name}" in result.stderr
    assert "run `mediagrid migrate`" in result.stderr


async def test_serve_on_a_taken_port_exits_1_naming_it(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = configured_env(settings, tmp_path)
        env["MEDIAGRID_GRPC_PORT"] = str(port)
        script = "import common.registry as r; r.SERVICES = {}; from common.cli import main; main()"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            "serve",
            env=env,
            cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    assert "MEDIAGRID_GRPC_PORT" in err.decode()


def test_config_shows_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    env = clean_env(
        MEDIAGRID_DATABASE_URL="postgresql://app:S3cretPassw0rd@db:5432/mediagrid",
        MEDIAGRID_GRPC_PORT="6001",
    )
    result = run_cli("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "S3cretPassw0rd" not in result.stdout + result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "6001" in lines["MEDIAGRID_GRPC_PORT"] and "environment" in lines["MEDIAGRID_GRPC_PORT"]
    assert "**********" in lines["MEDIAGRID_DATABASE_URL"]
    assert "mediagrid" in lines["MEDIAGRID_BUCKET_PREFIX"]


def test_health_exits_1_when_nothing_answers(tmp_path: Path) -> None:
    result = run_cli(
        "health",
        "--address",
        f"127.0.0.1:{free_port()}",
        "--timeout",
        "1",
        env=clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unknown_service_name_exits_2(tmp_path: Path, command: str) -> None:
    env = clean_env(
        MEDIAGRID_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x",
        MEDIAGRID_S3_ENDPOINT_URL="http://127.0.0.1:1",
        MEDIAGRID_AWS_ACCESS_KEY_ID="x",
        MEDIAGRID_AWS_SECRET_ACCESS_KEY="y",
    )
    result = run_cli(command, "billing", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown service(s): billing" in result.stderr


async def test_unconfigured_check_and_migrate_use_the_embedded_stores(
    tmp_path: Path, state_dir: Path
) -> None:
    env = clean_env(MEDIAGRID_DATA_DIR=str(state_dir))
    before = await asyncio.to_thread(run_cli, "check", env=env, cwd=tmp_path)
    assert "embedded PostgreSQL" in before.stdout
    assert "embedded SeaweedFS" in before.stdout
    # A fresh embedded database has every migration pending.
    assert before.returncode == 1
    assert "run `mediagrid migrate`" in before.stderr

    migrated = await asyncio.to_thread(run_cli, "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    again = await asyncio.to_thread(run_cli, "migrate", env=env, cwd=tmp_path)
    assert again.stderr.count("nothing (up to date)") == len(SERVICES)

    after = await asyncio.to_thread(run_cli, "check", env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "every object present" in after.stdout
    assert (state_dir / "pgdata" / "PG_VERSION").is_file()
    assert (state_dir / "s3-identities.json").is_file()


async def test_check_fails_an_unversioned_bucket(settings: Settings) -> None:
    from common.check import check_bucket

    async with AwsClients(settings).s3() as s3:
        await s3.create_bucket(Bucket="plain-bucket")
        result = await check_bucket(s3, settings, "plain-bucket")
        listed = await s3.list_objects_v2(Bucket="plain-bucket")
    assert not result.ok
    assert "versioning is not enabled" in result.detail
    assert listed.get("KeyCount", 0) == 0  # nothing was written to a bucket that failed


async def test_run_checks_in_process_reports_every_row(settings: Settings) -> None:
    from common.check import run_checks

    async with AwsClients(settings).s3() as s3:
        await ensure_bucket(s3, settings.bucket("files"))
    results = {r.name: r for r in await run_checks(settings)}
    assert all(r.ok for r in results.values()), results
    assert ": PostgreSQL " in results["database"].detail
    assert {f"migrations: {s.name}" for s in SERVICES.values() if s.migrations.is_dir()} <= set(
        results
    )
    assert results[f"bucket {settings.bucket('files')}"].ok
