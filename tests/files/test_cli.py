"""``mediagrid files upload|download|ls`` against a running service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from typer.testing import CliRunner

from services.files.cli import register
from tests.files.conftest import Files, random_bytes

app = typer.Typer()
register(app)


@app.command()
def version() -> None:
    """A second command so that typer keeps the `files` group name."""


async def test_cli_upload_download_ls(files: Files, tmp_path: Path) -> None:
    # The CLI keeps its upload resume records under XDG_STATE_HOME: not the developer's home.
    runner = CliRunner(env={"XDG_STATE_HOME": str(tmp_path / "state")})
    source = tmp_path / "clip.bin"
    data = random_bytes(300_000)
    source.write_bytes(data)
    common = ["--address", files.server.address, "--token", "alice"]

    def invoke(*args: str) -> str:
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
        return result.stdout

    uploaded = await asyncio.to_thread(invoke, "files", "upload", str(source))
    name = uploaded.strip().splitlines()[-1]
    assert name.startswith("files/")
    dest = tmp_path / "back.bin"
    await asyncio.to_thread(invoke, "files", "download", name, str(dest))
    assert dest.read_bytes() == data
    listing = await asyncio.to_thread(invoke, "files", "ls")
    assert "clip.bin" in listing
    denied = await asyncio.to_thread(
        runner.invoke,
        app,
        [
            "files",
            "download",
            name,
            str(dest),
            "--address",
            files.server.address,
            "--token",
            "dave",
        ],
    )
    assert denied.exit_code == 1
    assert "PERMISSION_DENIED" in denied.output
