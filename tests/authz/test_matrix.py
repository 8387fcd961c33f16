"""The authorization matrix (``matrix.toml``) run against the whole suite in-process.

Every RPC of every service (and a few variants of some: ``Method#variant``) x every caller
kind, and every declared job type x every caller kind for CreateJob, with the expected
status (``OK`` or a gRPC code, optionally ``CODE/REASON`` to pin the ErrorInfo reason).
An RPC of the protos without a row, a row without a request, or a declared job type
without a row fails here.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import mediagrid
import pytest
import pytest_asyncio
from mediagrid.users.v1 import user_service_pb2

from common.grpc_errors import error_info
from common.runtime import running_suite
from common.settings import Settings
from services.jobs.job_types import registry
from services.users.passwords import Passwords
from tests.authz.requests import REQUESTS, create_job_of_type
from tests.authz.world import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    CALLERS,
    OWNING_SERVICE,
    PASSWORD,
    FixtureError,
    World,
    start_world,
)
from tests.support.stores import reset_s3, run_admin, suite_settings, with_database

ON_THE_SUITE = pytest.mark.asyncio(loop_scope="module")

MATRIX = tomllib.loads((Path(__file__).parent / "matrix.toml").read_text())
RPC_ROWS: dict[str, dict[str, Any]] = MATRIX["rpc"]
JOB_TYPE_ROWS: dict[str, dict[str, Any]] = MATRIX["job_type"]
ROW_FIELDS = {"note"}
CODES = {code.name for code in grpc.StatusCode}


def declared_rpcs() -> set[str]:
    """``Service/Method`` of every service in the generated code of protos/."""
    rpcs = set()
    for module in pkgutil.walk_packages(mediagrid.__path__, "mediagrid."):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(module.name).DESCRIPTOR
            for service in descriptor.services_by_name.values():
                rpcs |= {f"{service.name}/{method.name}" for method in service.methods}
    return rpcs


def declared_job_types() -> set[str]:
    """The job types the registry declares in the test environment (demo types on)."""
    return {job_type.name for job_type in registry(Settings(environment="test"))}


def parse(expected: str) -> tuple[str, str | None]:
    code, _, reason = expected.partition("/")
    return code, reason or None


# --- the shape of the matrix -------------------------------------------------------------


def test_every_rpc_of_the_protos_has_a_row() -> None:
    assert len(declared_rpcs()) >= 65  # every service of the suite was found
    bases = {key.partition("#")[0] for key in RPC_ROWS}
    assert sorted(declared_rpcs() - set(RPC_ROWS)) == [], "RPCs without a row in matrix.toml"
    assert sorted(bases - declared_rpcs()) == [], "rows of RPCs the protos do not declare"


def test_every_row_has_a_request_and_every_request_a_row() -> None:
    assert sorted(set(RPC_ROWS) - set(REQUESTS)) == [], "rows without a request builder"
    assert sorted(set(REQUESTS) - set(RPC_ROWS)) == [], "request builders without a row"


def test_every_declared_job_type_has_a_row() -> None:
    assert sorted(declared_job_types() - set(JOB_TYPE_ROWS)) == [], "job types without a row"
    assert sorted(set(JOB_TYPE_ROWS) - declared_job_types()) == [], "rows of undeclared types"


@pytest.mark.parametrize(
    ("key", "row"), [*RPC_ROWS.items(), *JOB_TYPE_ROWS.items()], ids=[*RPC_ROWS, *JOB_TYPE_ROWS]
)
def test_every_row_names_every_caller_kind(key: str, row: dict[str, Any]) -> None:
    extra = {OWNING_SERVICE, "payload"} if key in JOB_TYPE_ROWS else set()
    assert set(CALLERS) <= set(row), f"{key}: missing {set(CALLERS) - set(row)}"
    assert set(row) <= set(CALLERS) | ROW_FIELDS | extra, f"{key}: unknown fields"
    for caller in set(row) & (set(CALLERS) | {OWNING_SERVICE}):
        code, _ = parse(row[caller])
        assert code in CODES, f"{key}.{caller}: {row[caller]!r} is not a gRPC status code"
    # Everything but Login and Authenticate needs a caller (docs/users.md).
    assert (
        key.startswith(("UserService/Login", "UserService/Authenticate"))
        or parse(row["anonymous"])[0] == "UNAUTHENTICATED"
    ), key


# --- the suite ---------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_admin_dsn: str, template_db: str, s3_endpoint: str) -> AsyncIterator[World]:
    """The whole suite on a database of its own, shared by the module's rows."""
    name = f"mg_authz_{uuid.uuid4().hex[:10]}"
    await run_admin(pg_admin_dsn, f"CREATE DATABASE {name} TEMPLATE {template_db}")
    await asyncio.to_thread(reset_s3, s3_endpoint)
    settings = suite_settings(
        with_database(pg_admin_dsn, name),
        s3_endpoint,
        grpc_shutdown_grace_seconds=1,
        db_pool_max_size=20,
        bootstrap_admin_email=ADMIN_EMAIL,
        bootstrap_admin_password=ADMIN_PASSWORD,
    )
    password_hash = await Passwords.from_settings(settings).hash(PASSWORD)
    try:
        async with running_suite(settings, ["all"], port=0) as (server, ctx):
            channel = grpc.aio.insecure_channel(server.address)
            try:
                yield await start_world(ctx, channel, password_hash)
            finally:
                await channel.close()
    finally:
        await run_admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def outcome(call: Awaitable[Any]) -> tuple[str, str]:
    """(status code name, ErrorInfo reason) of a call."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        return exc.code().name, info.reason if info else ""
    return "OK", ""


def mismatch(key: str, caller: str, expected: str, got: tuple[str, str]) -> str | None:
    code, reason = parse(expected)
    if got[0] == code and (reason is None or got[1] == reason):
        return None
    shown = f"{got[0]}/{got[1]}" if got[1] else got[0]
    return f"{key} as {caller}: got {shown}, expected {expected}"


@ON_THE_SUITE
@pytest.mark.parametrize("key", sorted(RPC_ROWS))
async def test_rpc_row(world: World, key: str) -> None:
    row = RPC_ROWS[key]
    problems = []
    for caller in CALLERS:
        cell = await world.cell()
        metadata = await cell.metadata(caller)
        got = await outcome(REQUESTS[key](cell, metadata))
        problems.append(mismatch(key, caller, row[caller], got))
    assert [p for p in problems if p] == []


@ON_THE_SUITE
@pytest.mark.parametrize("job_type", sorted(JOB_TYPE_ROWS))
async def test_job_type_row(world: World, job_type: str) -> None:
    row = JOB_TYPE_ROWS[job_type]
    problems = []
    for caller in [*CALLERS, *([OWNING_SERVICE] if OWNING_SERVICE in row else [])]:
        cell = await world.cell()
        metadata = await cell.metadata(caller)
        call = create_job_of_type(cell, caller, metadata, job_type, row.get("payload", {}))
        problems.append(mismatch(f"CreateJob {job_type}", caller, row[caller], await outcome(call)))
    assert [p for p in problems if p] == []


@ON_THE_SUITE
async def test_fixtures_fail_loudly(world: World) -> None:
    """A request whose fixture cannot be made is an error of the test, never a status."""
    cell = await world.cell()

    async def refused() -> None:
        await world.users.GetUser(user_service_pb2.GetUserRequest(name="users/me"))

    with pytest.raises(FixtureError):
        await cell.once("broken", refused)
