"""``mediagrid users create`` in dev with nothing configured: the embedded PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import MEDIAGRID, PASSWORD, client_env, free_port


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's tmp tree: as root, pgserver's own user must traverse every parent.
    path = Path(tempfile.mkdtemp(prefix="mg-cli-users-"))
    try:
        yield path / "state"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_users_create_uses_the_embedded_database_serve_would_use(
    data_dir: Path, tmp_path: Path
) -> None:
    env = client_env(tmp_path / "home", free_port())
    env["MEDIAGRID_DATA_DIR"] = str(data_dir)

    command = ["users", "create", "--email", "first@example.com", "--password", PASSWORD]

    def create() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MEDIAGRID), *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )

    created = create()
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("users/")
    assert (data_dir / "pgdata").is_dir()
    # The same database the next time: the account exists already.
    again = create()
    assert again.returncode == 1
    assert (
        again.stderr == "error: EMAIL_TAKEN: a user with email 'first@example.com' already exists\n"
    )
