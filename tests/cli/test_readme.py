"""The README's command line cannot rot: its marked blocks run against a real suite.

Every ```sh block after a ``<!-- readme-test -->`` line runs, in order, in one working
directory with bash ``-euo pipefail``, as a user would paste it: the real ``mediagrid`` on
PATH, nothing configured but the suite's port (``MEDIAGRID_GRPC_PORT``; the README assumes
the default). The ``readme-synopsis`` block must name only commands that exist.
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
TESTED = re.compile(r"^<!-- readme-test -->\n```sh\n(.*?)^```", re.M | re.S)
SYNOPSIS = re.compile(r"^<!-- readme-synopsis.*?-->\n```\n(.*?)^```", re.M | re.S)


def marked_blocks() -> list[str]:
    return TESTED.findall(README.read_text())


def test_the_readme_blocks_run_as_written(cli: Cli) -> None:
    blocks = marked_blocks()
    assert len(blocks) >= 4 and all("mediagrid" in block for block in blocks)
    (cli.cwd / "holiday.mp4").write_bytes(make_clip(seconds=1.0))  # "any video of yours"
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
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
