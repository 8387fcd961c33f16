"""Port and token discovery: nothing but MEDIAGRID_GRPC_PORT (or .env) and `mediagrid login`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from tests.cli.conftest import Cli


def session_file(cli: Cli) -> Path:
    return Path(cli.env["XDG_CONFIG_HOME"]) / "mediagrid" / "session.json"


def test_login_keeps_a_private_session_and_logout_revokes_it(cli: Cli) -> None:
    refused = cli.run("files", "ls", check=False)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr and "mediagrid login" in refused.stderr

    cli.login()
    stored = session_file(cli)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    session = json.loads(stored.read_text())["sessions"][cli.suite.address]
    assert session["email"] == cli.email
    # Nothing uploaded yet: every output mode still parses.
    assert json.loads(cli.run("files", "ls", "-o", "json").stdout) == []
    assert yaml.safe_load(cli.run("files", "ls", "-o", "yaml").stdout) == []
    assert cli.run("files", "ls", "-o", "names").stdout == ""

    logged_out = cli.run("logout")
    assert cli.suite.address in logged_out.stderr
    assert cli.suite.address not in json.loads(stored.read_text())["sessions"]
    # The server revoked the session: the old token no longer works anywhere.
    revoked = cli.run("files", "ls", "--token", session["token"], check=False)
    assert revoked.returncode == 1 and "UNAUTHENTICATED" in revoked.stderr


def test_the_port_comes_from_dotenv_like_the_server_reads_it(cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "MEDIAGRID_GRPC_PORT"}
    # A server in prod would refuse to start without a database URL; a client needs none.
    # A misspelled variable is named, with the setting it probably meant.
    (cli.cwd / ".env").write_text(
        f"MEDIAGRID_GRPC_PORT={cli.suite.port}\nMEDIAGRID_ENVIRONMENT=prod\n"
        "MEDIAGRID_GRPC_HOTS=127.0.0.1\n"
    )
    plain = Cli(suite=cli.suite, cwd=cli.cwd, email=cli.email, env=env)
    health = plain.run("health")
    assert health.stdout.strip() == f"{cli.suite.address} (overall): SERVING"
    assert "MEDIAGRID_GRPC_HOTS (in .env)" in health.stderr
    assert "did you mean MEDIAGRID_GRPC_HOST?" in health.stderr
    plain.login()
    assert cli.suite.address in json.loads(session_file(plain).read_text())["sessions"]
    assert json.loads(plain.run("files", "ls", "-o", "json").stdout) == []


def test_a_session_stored_for_one_address_is_not_sent_to_another(cli: Cli) -> None:
    cli.login()
    # The same server under another name: no session is stored for that address.
    other = cli.suite.address.replace("127.0.0.1", "localhost")
    result = cli.run("files", "ls", "--address", other, check=False)
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr


def test_cli_logs_stay_off_stdout(cli: Cli) -> None:
    cli.login()
    quiet = cli.run("files", "ls", "-o", "json")
    assert quiet.stderr == ""  # warnings only by default
    verbose = cli.run("-v", "files", "ls", "-o", "json")
    assert json.loads(verbose.stdout) == []  # -v logs go to stderr, never into the results
