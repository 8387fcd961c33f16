"""``mediagrid users create|login|sweep`` as a separate process against a running service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from mediagrid.users.v1 import user_service_pb2 as pb

from tests.users.conftest import UsersEnv

ROOT = Path(__file__).resolve().parents[2]
MEDIAGRID = Path(sys.executable).parent / "mediagrid"


async def _run(
    env: UsersEnv, *args: str, overrides: dict[str, str] | None = None
) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    environ.update(
        MEDIAGRID_ENVIRONMENT="test",
        MEDIAGRID_DATABASE_URL=env.settings.database_dsn(),
        PYTHONPATH=f"{ROOT}:{ROOT / 'gen'}",
    )
    environ.update(overrides or {})
    process = await asyncio.create_subprocess_exec(
        str(MEDIAGRID),
        "users",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
        cwd=ROOT,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode().strip(), err.decode()


async def test_cli_create_login_create_remote_and_sweep(users: UsersEnv) -> None:
    code, name, err = await _run(
        users,
        "create",
        "--email",
        "cli@example.com",
        "--role",
        "admin",
        "--password",
        "cli admin passphrase",
    )
    assert code == 0, err
    assert name.startswith("users/")
    created = await users.repository.get_user(name.removeprefix("users/"))
    assert created.role == "admin" and created.has_password

    code, token, err = await _run(
        users,
        "login",
        "--email",
        "cli@example.com",
        "--password",
        "cli admin passphrase",
        "--address",
        users.server.address,
    )
    assert code == 0, err
    principal = (await users.stub.Authenticate(pb.AuthenticateRequest(token=token))).principal
    assert principal.user == name

    code, remote_name, err = await _run(
        users,
        "create",
        "--email",
        "robot@example.com",
        "--role",
        "service",
        "--token",
        token,
        "--address",
        users.server.address,
    )
    assert code == 0, err
    assert (await users.repository.get_user(remote_name.removeprefix("users/"))).role == "service"

    code, _, err = await _run(
        users,
        "login",
        "--email",
        "cli@example.com",
        "--password",
        "wrong password!",
        "--address",
        users.server.address,
    )
    assert code == 1 and "UNAUTHENTICATED" in err

    code, report, err = await _run(users, "sweep")
    assert code == 0, err
    assert json.loads(report)["skipped"] is False


async def test_cli_reports_an_unreachable_database_without_a_traceback(users: UsersEnv) -> None:
    nowhere = {
        "MEDIAGRID_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
        "MEDIAGRID_DB_CONNECT_ATTEMPTS": "1",
    }
    for args in (("sweep",), ("create", "--email", "x@example.com", "--role", "service")):
        code, out, err = await _run(users, *args, overrides=nowhere)
        assert code == 1, (args, err)
        assert "error:" in err and "Traceback" not in err, (args, err)
        assert out == ""
    code, _, err = await _run(users, "create", "--email", "x@example.com", "--role", "boss")
    assert code == 2 and "--role must be one of" in err
