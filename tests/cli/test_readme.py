"""The README's command line cannot rot: its marked blocks run against a real suite.

Every ```sh block after a ``<!-- readme-test -->`` line runs, in order, in one working
directory with bash ``-euo pipefail``, as a user would paste it: the real ``mediagrid`` on
PATH, nothing configured but the suite's port (``MEDIAGRID_GRPC_PORT``; the README assumes
the default). The ``buf curl`` and grpcurl blocks name the default address, which is replaced
by the suite's; they run beside a checkout's ``protos/`` and ``node_modules/`` (linked into
the working directory). The ``readme-synopsis`` block must name only commands that exist.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import typer

from common.cli import app
from tests.cli.conftest import ROOT, Cli
from tests.video.clips import make_clip

README = ROOT / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:50051"
TESTED = re.compile(r"^<!-- readme-test -->\n```sh\n(.*?)^```", re.M | re.S)
SYNOPSIS = re.compile(r"^<!-- readme-synopsis.*?-->\n```\n(.*?)^```", re.M | re.S)


def marked_blocks() -> list[str]:
    return TESTED.findall(README.read_text())


def test_the_readme_blocks_run_as_written(cli: Cli) -> None:
    blocks = marked_blocks()
    assert len(blocks) >= 4 and all("mediagrid" in block for block in blocks)
    (cli.cwd / "holiday.mp4").write_bytes(make_clip(seconds=1.0))  # "any video of yours"
    for checkout in ("protos", "node_modules"):
        (cli.cwd / checkout).symlink_to(ROOT / checkout)
    outputs = []
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.replace(DEFAULT_ADDRESS, cli.suite.address)],
            cwd=cli.cwd,
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"README block failed ({result.returncode}):\n{block}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        outputs.append(result.stdout + result.stderr)
    tools = [out for block, out in zip(blocks, outputs, strict=True) if "grpcurl" in block]
    assert len(tools) == 1 and "mediagrid.files.v1.FileService" in tools[0]
    # The details were decoded with the vendored google/rpc protos, not left as raw bytes.
    assert '"@type":"type.googleapis.com/google.rpc.ErrorInfo"' in tools[0], tools[0]
    assert '"fieldViolations":[{"field":"name"' in tools[0], tools[0]
    assert "not recognized" not in tools[0]
    session = Path(cli.env["XDG_CONFIG_HOME"]) / "mediagrid" / "session.json"
    assert json.loads(session.read_text())["sessions"] == {}  # the last block logged out


def synopsis_commands() -> list[list[str]]:
    """``mediagrid files upload|ls ...`` -> [["files", "upload"], ["files", "ls"]]."""
    (block,) = SYNOPSIS.findall(README.read_text())
    commands = []
    for line in block.splitlines():
        usage = re.split(r"\s{2,}", line.strip())[0].replace(" | ", "|").split()
        assert usage[0] == "mediagrid", line
        words = list(itertools.takewhile(lambda w: w[0] not in "[-" and w.islower(), usage[1:]))
        commands += [list(c) for c in itertools.product(*(w.split("|") for w in words))]
    return commands


def test_every_command_of_the_synopsis_exists() -> None:
    root = typer.main.get_command(app)
    commands = synopsis_commands()
    assert ["videos", "show"] in commands and ["login"] in commands
    for words in commands:
        node: Any = root
        for word in words:
            node = getattr(node, "commands", {}).get(word)
            assert node is not None, f"README lists `mediagrid {' '.join(words)}`, which is missing"


def test_buf_curl_asks_reflection_v1(cli: Cli) -> None:
    """The newer reflection protocol alone (no fallback to v1alpha) lists every service."""
    result = subprocess.run(
        [
            str(ROOT / "node_modules/.bin/buf"),
            "curl",
            "--protocol=grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol=grpc-v1",
            "--list-services",
            f"http://{cli.suite.address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    services = set(result.stdout.split())
    assert {
        "grpc.reflection.v1.ServerReflection",
        "mediagrid.users.v1.UserService",
        "mediagrid.jobs.v1.WorkerService",
    } <= services
