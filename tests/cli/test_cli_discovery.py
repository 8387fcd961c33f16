"""Port and token discovery: nothing but MEDIAGRID_GRPC_PORT (or .env) and `mediagrid login`."""

from __future__ import annotations

import json
import stat

from tests.cli.conftest import Cli


def test_login_stores_a_private_session_that_later_commands_use(cli: Cli) -> None:
    assert cli.run("files", "ls", check=False).returncode == 1  # no token yet
    cli.login()
    stored = cli.cwd.parent / "home" / "config" / "mediagrid" / "session.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    session = json.loads(stored.read_text())["sessions"][cli.suite.address]
    assert session["email"] == cli.email

    listed = cli.run("files", "ls", "-o", "json")
    assert json.loads(listed.stdout) == []
    assert "Traceback" not in listed.stderr
