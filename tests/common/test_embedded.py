"""Embedded PostgreSQL bookkeeping: processes that died without letting go are forgotten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.embedded import EmbeddedPostgres


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_dead_processes_are_dropped_from_the_handle_list(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    handles = pgdata / ".handle_pids.json"
    gone = dead_pid()
    alive = os.getppid()
    handles.write_text(json.dumps([gone, alive, os.getpid()]))

    EmbeddedPostgres(pgdata)._forget_dead_handles()

    # Our own pid is dropped too: pgserver adds it back when this process attaches.
    assert json.loads(handles.read_text()) == [alive]


def test_no_handle_list_is_fine(tmp_path: Path) -> None:
    EmbeddedPostgres(tmp_path / "pgdata")._forget_dead_handles()
    assert not (tmp_path / "pgdata").exists()
