"""The Python client's resume store: what the CLI relies on, usable by any caller."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

from mediagrid.files.v1 import file_service_pb2

from services.files.client import FilesClient, UploadProgress, open_channel
from services.files.resume import JsonResumeStore, resume_key
from tests.cli.conftest import PART, Cli, ThrottledProxy


def test_a_file_is_known_again_only_while_it_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "clip.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024))
    store = JsonResumeStore(tmp_path / "state" / "uploads.json")
    key = resume_key(path, server="127.0.0.1:1")
    store.put(key, "uploads/abc")
    assert store.get(resume_key(path, server="127.0.0.1:1")) == "uploads/abc"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    # Another server, another kind of upload, or changed bytes: not the same upload.
    assert store.get(resume_key(path, server="127.0.0.1:2")) is None
    assert store.get(resume_key(path, server="127.0.0.1:1", kind="video")) is None
    with path.open("r+b") as stream:  # same size, same first MiB, last MiB changed
        stream.seek(-10, os.SEEK_END)
        stream.write(b"0123456789")
    os.utime(path, ns=(key.mtime_ns, key.mtime_ns))  # even with the old modification time
    assert store.get(resume_key(path, server="127.0.0.1:1")) is None
    store.remove(key)
    assert store.records() == []


def test_a_damaged_store_costs_a_fresh_upload_not_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "uploads.json"
    path.write_text("{not json")
    store = JsonResumeStore(path)
    assert store.records() == []
    key = resume_key(Path(__file__), server="x")
    store.put(key, "uploads/def")
    assert json.loads(path.read_text())["uploads"][0]["upload"] == "uploads/def"


async def test_the_client_continues_the_recorded_session_in_a_new_process_run(
    cli: Cli, tmp_path: Path
) -> None:
    cli.login()
    sessions = json.loads((Path(cli.env["XDG_CONFIG_HOME"]) / "mediagrid/session.json").read_text())
    token = sessions["sessions"][cli.suite.address]["token"]
    path = tmp_path / "long.bin"
    data = os.urandom(4 * PART + 99)
    path.write_bytes(data)
    store = JsonResumeStore(tmp_path / "uploads.json")
    proxy = ThrottledProxy("127.0.0.1", cli.suite.port)  # slow enough to stop half-way
    await proxy.start()
    slow = open_channel(f"127.0.0.1:{proxy.port}")
    channel = open_channel(cli.suite.address)
    try:
        client = FilesClient(slow, token=token, server=cli.suite.address)
        running: list[asyncio.Task[object]] = []

        def watch(progress: UploadProgress) -> None:
            if progress.committed_bytes >= PART:
                running[0].cancel()  # at once, before the rest is sent

        # The first run stops once a part is stored, as a killed process would.
        running.append(asyncio.create_task(client.upload(path, on_progress=watch, resume=store)))
        await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), timeout=90)
        assert running[0].cancelled()
        (record,) = store.records()
        status = await client.upload_status(record.upload)
        assert status.state == file_service_pb2.UPLOAD_STATE_ACTIVE

        # A new client (a new run) finds the session and sends only what is missing.
        reports: list[UploadProgress] = []
        again = FilesClient(channel, token=token, server=cli.suite.address)
        file = await again.upload(path, on_progress=reports.append, resume=store)
        assert reports[0].received_bytes >= PART
        # Once every byte is sent the caller hears so (the server is silent until it commits).
        assert [r.sending_done for r in reports].count(True) == 1
        assert file.size_bytes == len(data)
        done = await again.upload_status(record.upload)
        assert done.state == file_service_pb2.UPLOAD_STATE_COMPLETED and done.file == file.name
        assert store.records() == []

        # Committed, but the run died before it could drop the record: the next run gets
        # the committed file back instead of uploading a copy.
        store.put(record.key, record.upload)
        assert (await again.upload(path, resume=store)).name == file.name
        assert store.records() == []
    finally:
        await slow.close()
        await channel.close()
        await proxy.stop()
