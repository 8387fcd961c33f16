"""A ``MEDIAGRID_*`` variable that names no setting is warned about, with the closest setting."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from common.settings import (
    NON_SETTING_PREFIXES,
    NON_SETTING_VARIABLES,
    load_settings,
    setting_variables,
    unknown_variable_warnings,
)

ROOT = Path(__file__).resolve().parents[2]
MEDIAGRID = Path(sys.executable).parent / "mediagrid"


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read ./.env; run where only the test's own .env (if any) exists.
    monkeypatch.chdir(tmp_path)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mediagrid.settings" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("MEDIAGRID_GRPC_PROT", "MEDIAGRID_GRPC_PORT"),
        ("MEDIAGRID_EMBEDED_WORKER", "MEDIAGRID_EMBEDDED_WORKER"),
        ("MEDIAGRID_LOGLEVEL", "MEDIAGRID_LOG_LEVEL"),
        ("MEDIAGRID_DB_URL", "MEDIAGRID_DATABASE_URL"),
        ("mediagrid_s3_endpoint", "MEDIAGRID_S3_ENDPOINT_URL"),
    ],
)
def test_a_misspelt_variable_is_warned_about_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, meant: str
) -> None:
    monkeypatch.setenv(variable, "1")
    with caplog.at_level(logging.WARNING, logger="mediagrid.settings"):
        load_settings()
    [warning] = warnings_logged(caplog)
    assert warning.startswith(f"{variable} (in the environment) is not a mediagrid setting")
    assert warning.endswith(f"did you mean {meant}?")


def test_a_variable_close_to_nothing_points_at_the_documentation() -> None:
    [warning] = unknown_variable_warnings({"MEDIAGRID_ZZZ": "1"}, env_file=None)
    assert "MEDIAGRID_ZZZ" in warning and "did you mean" not in warning
    assert "docs/configuration.md" in warning


def test_a_misspelt_variable_in_the_env_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".env").write_text("MEDIAGRID_GRPC_PORT=50060\nMEDIAGRID_BUCKET_PREFX=media\n")
    with caplog.at_level(logging.WARNING, logger="mediagrid.settings"):
        settings = load_settings()
    assert settings.grpc_port == 50060  # the file is read: only the misspelt line is ignored
    assert warnings_logged(caplog) == [
        "MEDIAGRID_BUCKET_PREFX (in .env) is not a mediagrid setting and is ignored; "
        "did you mean MEDIAGRID_BUCKET_PREFIX?"
    ]


def test_settings_the_cli_and_test_switches_are_not_warned_about() -> None:
    environ = {
        **dict.fromkeys(setting_variables(), "x"),
        **dict.fromkeys(NON_SETTING_VARIABLES, "x"),
        "MEDIAGRID_TEST_EMBEDDED_PG": "1",
        "MEDIAGRID_TEST_EMBEDDED_REDIS": "1",
        "mediagrid_grpc_port": "1",  # read case-insensitively, like the settings themselves
        "PATH": "/bin",
        "OTHER_MEDIAGRID_THING": "1",
    }
    assert unknown_variable_warnings(environ, env_file=None) == []


def _option_envvars(command: Any) -> Iterator[str]:
    # Duck-typed: typer builds its commands on a click of its own (typer._click).
    for param in command.params:
        envvars = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
        yield from (e for e in envvars if e)
    for sub in getattr(command, "commands", {}).values():
        yield from _option_envvars(sub)


def test_every_envvar_of_the_command_line_is_a_setting_or_listed_as_none() -> None:
    from common.cli import app

    envvars = set(_option_envvars(typer.main.get_command(app)))
    assert envvars, "the CLI declares environment variables (MEDIAGRID_TOKEN at least)"
    known = set(setting_variables()) | NON_SETTING_VARIABLES
    assert {e for e in envvars if e.startswith("MEDIAGRID_")} <= known
    assert not NON_SETTING_VARIABLES & set(setting_variables())
    assert all(p.startswith("MEDIAGRID_") for p in NON_SETTING_PREFIXES)


def test_the_command_prints_the_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MEDIAGRID_")} | {
        "MEDIAGRID_GRPC_PROT": "50070",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
    }
    done = subprocess.run(
        [str(MEDIAGRID), "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "MEDIAGRID_GRPC_PROT" in done.stderr
    assert "did you mean MEDIAGRID_GRPC_PORT?" in done.stderr
