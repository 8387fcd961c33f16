"""The dev login hint names a buf that runs: on PATH, or where `npm install` puts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.users.bootstrap import buf_command


def test_buf_on_path_is_named_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = tmp_path / "buf"
    buf.write_text("#!/bin/sh\n")
    buf.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert buf_command() == "buf"


def test_without_buf_on_path_the_npm_location_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no buf
    assert buf_command() == "node_modules/.bin/buf"
