"""``mediagrid files``: output for people and scripts, and uploads that resume across runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from services.files.client import FilesClient, open_channel
from tests.cli.conftest import MEDIAGRID, PART, Cli, ThrottledProxy


def stored_token(cli: Cli) -> str:
    sessions = json.loads((Path(cli.env["XDG_CONFIG_HOME"]) / "mediagrid/session.json").read_text())
    return str(sessions["sessions"][cli.suite.address]["token"])


def resume_records(cli: Cli) -> list[dict[str, object]]:
    store = Path(cli.env["XDG_STATE_HOME"]) / "mediagrid" / "uploads.json"
    if not store.exists():
        return []
    records: list[dict[str, object]] = json.loads(store.read_text())["uploads"]
    return records


def test_upload_list_download_for_people_and_scripts(cli: Cli) -> None:
    cli.login()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (cli.cwd / "report.bin").write_bytes(data)

    uploaded = cli.run("files", "upload", "report.bin")
    name = uploaded.stdout.strip()  # the name alone on stdout
    assert name.startswith("files/") and "\n" not in name
    assert "MiB" in uploaded.stderr and " MB" not in uploaded.stderr  # binary units only
    assert "{" not in uploaded.stderr  # no JSON log lines among the messages

    # At 80 columns (and in a pipe) the table still carries every id whole.
    table = cli.run("files", "ls").stdout
    assert name in table
    assert "3.0 MiB" in table
    assert cli.run("files", "ls", "-o", "names").stdout.split() == [name]
    shown = json.loads(cli.run("files", "ls", "--output", "json").stdout)
    assert [f["name"] for f in shown] == [name]
    assert shown[0]["size_bytes"] == str(len(data))  # protobuf JSON: int64 as a string
    assert yaml.safe_load(cli.run("files", "ls", "-o", "yaml").stdout)[0]["name"] == name

    cli.run("files", "download", name, "copy.bin")
    assert (cli.cwd / "copy.bin").read_bytes() == data
    assert resume_records(cli) == []  # a finished upload leaves no resume record


async def committed_bytes(cli: Cli, token: str) -> tuple[str, int]:
    """The recorded session of the running upload and what the server stored of it."""
    records = resume_records(cli)
    if not records:
        return "", 0
    upload = str(records[0]["upload"])
    channel = open_channel(cli.suite.address)
    try:
        status = await FilesClient(channel, token=token).upload_status(upload)
    finally:
        await channel.close()
    return upload, int(status.committed_bytes)


async def test_an_upload_stopped_by_ctrl_c_resumes_when_the_same_command_runs_again(
    cli: Cli,
) -> None:
    cli.login()
    token = stored_token(cli)
    data = os.urandom(6 * PART + 12345)
    (cli.cwd / "big.bin").write_bytes(data)
    async with ThrottledProxy("127.0.0.1", cli.suite.port) as proxy:
        command = ["files", "upload", "big.bin", "--address", f"127.0.0.1:{proxy.port}"]
        env = {**cli.env, "MEDIAGRID_TOKEN": token}
        first = await asyncio.create_subprocess_exec(
            str(MEDIAGRID),
            *command,
            env=env,
            cwd=cli.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        upload, stored = "", 0
        for _ in range(600):
            upload, stored = await committed_bytes(cli, token)
            if stored >= PART or first.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert stored >= PART, "no part was stored before the upload was interrupted"
        proxy.pause()  # the connection hangs, as on a network cut; then Ctrl-C
        first.send_signal(signal.SIGINT)
        _, raw_err = await asyncio.wait_for(first.communicate(), timeout=60)
        err = raw_err.decode()
        assert first.returncode == 130, err
        assert f"cancel: mediagrid files uploads --cancel {upload}" in err
        assert f"resume: mediagrid {' '.join(command)}" in err
        assert "Traceback" not in err

        await proxy.close_connections()
        proxy.rate = None
        proxy.resume()

        # The unfinished upload is listed for this machine to resume or cancel.
        listing = ["files", "uploads", "-o", "json", *command[-2:]]
        listed = json.loads((await asyncio.to_thread(cli.run, *listing, **env)).stdout)
        assert [u["name"] for u in listed] == [upload]
        assert int(listed[0]["committed_bytes"]) >= PART
        second = await asyncio.to_thread(cli.run, *command, **env)
    assert f"resuming {upload} at" in second.stderr
    name = second.stdout.strip()
    files = json.loads(cli.run("files", "ls", "-o", "json").stdout)
    assert [f["name"] for f in files] == [name]  # one file, not one per attempt
    cli.run("files", "download", name, "copy.bin")
    assert (cli.cwd / "copy.bin").read_bytes() == data
    assert resume_records(cli) == []
    assert json.loads(cli.run("files", "uploads", "-o", "json").stdout) == []


def test_uploads_cancel_drops_an_unfinished_session(cli: Cli) -> None:
    cli.login()
    data = os.urandom(2 * PART)
    (cli.cwd / "draft.bin").write_bytes(data)
    # An upload that a crash left behind: its session is recorded, nothing else happened.
    from services.files.resume import JsonResumeStore, resume_key

    async def open_session() -> str:
        channel = open_channel(cli.suite.address)
        try:
            client = FilesClient(channel, token=stored_token(cli), server=cli.suite.address)
            call = client.stub.Upload(metadata=client.metadata)
            from mediagrid.files.v1 import file_pb2, file_service_pb2

            header = file_pb2.UploadHeader(display_name="draft.bin", size_bytes=len(data))
            await call.write(file_service_pb2.UploadRequest(header=header))
            first = await call.read()
            call.cancel()
            return str(first.progress.upload)
        finally:
            await channel.close()

    upload = asyncio.run(open_session())
    store = JsonResumeStore(Path(cli.env["XDG_STATE_HOME"]) / "mediagrid" / "uploads.json")
    store.put(resume_key(cli.cwd / "draft.bin", server=cli.suite.address), upload)
    assert upload in cli.run("files", "uploads").stdout

    cancelled = cli.run("files", "uploads", "--cancel", upload, "-o", "json")
    assert json.loads(cancelled.stdout)[0]["state"] == "UPLOAD_STATE_CANCELLED"
    assert json.loads(cli.run("files", "uploads", "-o", "json").stdout) == []
    # The next run of the upload starts afresh instead of resuming the cancelled session.
    again = cli.run("files", "upload", "draft.bin")
    assert "resuming" not in again.stderr
    assert again.stdout.strip().startswith("files/")
