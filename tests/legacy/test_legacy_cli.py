"""``mediagrid legacy ...`` as a real subprocess against the test database, moto and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg

from common.settings import Settings
from services.files.repository import FileRepository
from services.migration.cli import default_run_name
from services.users.repository import UserRepository
from tests.legacy.conftest import Redis

ROOT = Path(__file__).resolve().parents[2]
MEDIAGRID = ROOT / ".venv" / "bin" / "mediagrid"


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    assert settings.database_url is not None and settings.s3_endpoint_url is not None
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        MEDIAGRID_ENVIRONMENT="test",
        MEDIAGRID_DATABASE_URL=settings.database_url.get_secret_value(),
        MEDIAGRID_S3_ENDPOINT_URL=settings.s3_endpoint_url,
        MEDIAGRID_AWS_ACCESS_KEY_ID="testing",
        MEDIAGRID_AWS_SECRET_ACCESS_KEY="testing",
        MEDIAGRID_S3_PAYLOAD_SIGNING="false",
        MEDIAGRID_LOG_FORMAT="text",
        MEDIAGRID_LOG_LEVEL="WARNING",
        COLUMNS="200",
    )
    return env


async def mediagrid(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(MEDIAGRID), "legacy", *args],
        env=cli_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_import_files_cli_reports_failures_then_resumes_and_rolls_back(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await UserRepository(pool).create_user(
        email="a@example.com", display_name="", role="user", password_hash=None
    )
    (tmp_path / user.id / "a").mkdir(parents=True)
    (tmp_path / user.id / "a" / "one.txt").write_text("one")
    (tmp_path / user.id / "empty.bin").write_bytes(b"")
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "x.bin").write_bytes(b"x")

    dry = await mediagrid(settings, "import-files", "--source", str(tmp_path), "--dry-run")
    assert "planned" in dry.stdout, dry.stderr
    first = await mediagrid(settings, "import-files", "--source", str(tmp_path), "--run", "r1")
    assert first.returncode == 1, first.stderr
    assert "UNKNOWN_OWNER" in first.stdout and "ghost/x.bin" in first.stdout
    assert "imported" in first.stdout and "--rollback r1" in first.stderr
    files = FileRepository(pool)
    assert sorted(f.display_name for f in await files.user_files(user.id)) == [
        "a/one.txt",
        "empty.bin",
    ]

    (tmp_path / "ghost" / "x.bin").unlink()
    second = await mediagrid(settings, "import-files", "--source", str(tmp_path), "--run", "r1")
    assert second.returncode == 0, second.stdout + second.stderr

    undo = await mediagrid(settings, "import-files", "--rollback", "r1")
    assert undo.returncode == 0, undo.stderr
    assert "file records" in undo.stdout
    assert await files.user_files(user.id) == []

    missing = await mediagrid(settings, "import-files", "--rollback", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr


async def test_import_redis_cli_prints_rejects_and_resumes(
    settings: Settings, pool: asyncpg.Pool, redis_prefix: Redis, redis_url: str
) -> None:
    client, prefix = redis_prefix
    for n in range(5):
        await client.hset(
            f"{prefix}user:u{n}", mapping={"email": f"u{n}@example.com", "created_at": "1"}
        )
    await client.hset(f"{prefix}user:bad", mapping={"email": "nope", "created_at": "1"})
    base = ("import-redis", "--url", redis_url, "--prefix", prefix, "--batch", "2")
    partial = await mediagrid(settings, *base, "--limit", "3")
    assert "continue with --resume" in partial.stderr, partial.stdout + partial.stderr
    rest = await mediagrid(settings, *base, "--resume")
    done = partial.stdout + rest.stdout
    assert "INVALID_USER" in done and f"{prefix}user:bad" in done
    assert rest.returncode == 1 or partial.returncode == 1
    users = await UserRepository(pool).list_users(role=None, status=None, after=None, limit=100)
    assert sorted(u.email for u in users) == [f"u{n}@example.com" for n in range(5)]


def test_default_run_name_is_stable_and_safe(tmp_path: Path) -> None:
    odd = tmp_path / "old uploads (2019)"
    name = default_run_name(odd)
    assert name == default_run_name(odd) and name.startswith("old-uploads--2019-")
    assert default_run_name(tmp_path / "other") != name
