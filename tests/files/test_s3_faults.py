"""The files service with S3 behind a fault proxy (the lane's S3 behind ``TcpProxy``).

Blackholed or refused S3: an Upload ends UNAVAILABLE (S3_UNAVAILABLE, with RetryInfo)
within its bound and stays resumable, byte-identical once S3 is back; GetUploadStatus and
the other metadata RPCs answer while S3 is away; a cancellation that lands while the
multipart upload is being created leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mediagrid.files.v1 import file_pb2, files_pb2

from common.aws import AwsClients
from common.errors import NotFound, Unavailable
from common.grpc_errors import error_info, retry_info
from services.files.app import SERVICE_NAME as FILES_SERVICE
from services.files.storage import Storage
from tests.files.conftest import (
    CALL_BOUND,
    PART,
    TRANSFER_BOUND,
    Files,
    MiB,
    chunks,
    data_msgs,
    header_msg,
    random_bytes,
    sha,
    start_behind,
    upload_outcome,
)
from tests.files.test_resume import resume
from tests.support.object_store import ObjectStore
from tests.support.proxy import TcpProxy

SLACK = 5.0  # on top of the bounds, for a shared, noisy machine


class UploadCall:
    """One Upload stream driven message by message, so a test can stop in the middle."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.call = files.stub.Upload(metadata=files.md("alice"))
        self.responses: list[files_pb2.UploadResponse] = []
        self.upload = ""

    async def start(self, **header: Any) -> None:
        header.setdefault("display_name", "faulty.bin")
        await self.call.write(files_pb2.UploadRequest(header=file_pb2.UploadHeader(**header)))
        first = await self.call.read()
        assert first is not grpc.aio.EOF
        self.upload = first.progress.upload

    async def send(self, data: bytes) -> None:
        for piece in chunks(data, MiB):
            await self.call.write(files_pb2.UploadRequest(data=piece))

    async def committed_at_least(self, offset: int) -> None:
        """Wait until the session's committed offset reaches ``offset`` (progress messages
        only go out as data arrives, so ask GetUploadStatus)."""
        for _ in range(200):
            if (await status_of(self.files, self.upload)).committed_bytes >= offset:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.upload} never committed {offset} bytes")

    async def outcome(self) -> grpc.aio.AioRpcError:
        """Finish writing and read until the call fails; return its error."""
        # The server may have ended the call already: its status is what counts.
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while (response := await self.call.read()) is not grpc.aio.EOF:
                self.responses.append(response)
        return caught.value


def assert_s3_unavailable(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    info = error_info(error)
    assert info is not None and info.reason == "S3_UNAVAILABLE", info
    retry = retry_info(error)
    assert retry is not None and retry.retry_delay.ToNanoseconds() > 0


async def status_of(files: Files, upload: str) -> Any:
    """The session's state; answered within a 5 s deadline or the test fails."""
    response = await files.stub.GetUploadStatus(
        files_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice"), timeout=5.0
    )
    return response.upload


async def open_multipart_uploads(store: ObjectStore, bucket: str) -> list[str]:
    """Ids of the multipart uploads in progress in ``bucket``, asked of S3 directly."""
    client = store.client()
    listing = await asyncio.to_thread(client.list_multipart_uploads, Bucket=bucket)
    return [u["UploadId"] for u in listing.get("Uploads", [])]


async def test_blackholed_s3_fails_the_upload_within_its_bound_and_it_resumes(
    suite: Any, s3_proxy: TcpProxy
) -> None:
    files = await start_behind(suite, s3_proxy)
    data = random_bytes(3 * PART + 12345)
    statuses: Counter[str] = Counter()
    upload = UploadCall(files)
    await upload.start(size_bytes=len(data), sha256=sha(data))
    await upload.send(data[:PART])
    await upload.committed_at_least(PART)

    s3_proxy.pause()
    paused = time.monotonic()
    await upload.send(data[PART:])
    error = await upload.outcome()
    elapsed = time.monotonic() - paused
    statuses[error.code().name] += 1
    assert_s3_unavailable(error)

    # Answers at once with what is committed, though S3 is still away.
    status = await status_of(files, upload.upload)
    statuses["GetUploadStatus:" + files_pb2.UploadState.Name(status.state)] += 1
    print(
        f"blackhole: 1 upload, S3 paused {elapsed:.1f}s until the status, "
        f"committed {status.committed_bytes}, statuses {dict(statuses)}"
    )
    assert elapsed < TRANSFER_BOUND + CALL_BOUND + SLACK
    assert status.state == files_pb2.UPLOAD_STATE_ACTIVE
    assert status.committed_bytes == PART

    s3_proxy.resume()
    file = await resume(files, upload.upload, data)
    assert file.sha256 == sha(data)
    assert await files.download(file.name) == data


async def test_refused_s3_fails_the_upload_fast(suite: Any, s3_proxy: TcpProxy) -> None:
    files = await start_behind(suite, s3_proxy)
    data = random_bytes(2 * PART + 10)
    upload = UploadCall(files)
    await upload.start()
    await upload.send(data[:PART])
    await upload.committed_at_least(PART)

    await s3_proxy.refuse()
    await s3_proxy.close_connections()  # pooled keep-alive connections are gone too
    refused = time.monotonic()
    await upload.send(data[PART:])
    error = await upload.outcome()
    elapsed = time.monotonic() - refused
    print(f"refused: 1 upload ended {error.code().name} after {elapsed:.1f}s")
    assert_s3_unavailable(error)
    assert elapsed < TRANSFER_BOUND + CALL_BOUND + SLACK

    await s3_proxy.accept()
    file = await resume(files, upload.upload, data)
    assert await files.download(file.name) == data


async def test_upload_status_answers_while_a_broken_streams_parts_hang(
    suite: Any, s3_proxy: TcpProxy
) -> None:
    # A long transfer bound: the broken stream's parts are certainly still hanging when
    # GetUploadStatus is asked (before, it waited for them up to the S3 read timeout).
    files = await start_behind(suite, s3_proxy, s3_transfer_timeout_seconds=60.0)
    data = random_bytes(3 * PART + 1)
    upload = UploadCall(files)
    await upload.start()
    await upload.send(data[:PART])
    await upload.committed_at_least(PART)
    s3_proxy.pause()
    await upload.send(data[PART : 3 * PART])
    await asyncio.sleep(0.5)  # let the server hand the parts to S3
    upload.call.cancel()

    answered = []
    for _ in range(3):
        status = await status_of(files, upload.upload)
        answered.append(status.committed_bytes)
    print(f"broken stream: GetUploadStatus answered {len(answered)}x with {answered}")
    assert answered == [PART] * 3

    s3_proxy.resume()
    file = await resume(files, upload.upload, data)
    assert await files.download(file.name) == data


async def test_cancel_during_create_multipart_leaves_no_orphan(
    suite: Any, s3_proxy: TcpProxy, object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = await start_behind(suite, s3_proxy, s3_call_timeout_seconds=30.0)
    creating = asyncio.Event()
    original = Storage.create_multipart

    async def observed(self: Storage, *args: Any, **kwargs: Any) -> str:
        creating.set()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "create_multipart", observed)
    upload = UploadCall(files)
    await upload.start()
    s3_proxy.pause()  # the CreateMultipartUpload request waits in the proxy
    await upload.send(random_bytes(PART + 1))
    await asyncio.wait_for(creating.wait(), 10)
    await asyncio.sleep(0.2)
    upload.call.cancel()
    await asyncio.sleep(0.2)  # the server sees the cancellation while S3 is still away
    s3_proxy.resume()  # now S3 creates the upload and answers

    bucket = files.ctx.settings.bucket("files")
    open_uploads = await open_multipart_uploads(object_store, bucket)
    for _ in range(100):  # the abort follows the create's answer
        if not open_uploads:
            break
        await asyncio.sleep(0.1)
        open_uploads = await open_multipart_uploads(object_store, bucket)
    status = await status_of(files, upload.upload)
    print(
        f"cancel during create: {len(open_uploads)} multipart uploads left in progress, "
        f"session {files_pb2.UploadState.Name(status.state)}"
    )
    assert open_uploads == []
    assert status.state == files_pb2.UPLOAD_STATE_ACTIVE  # resumable from offset 0
    assert status.committed_bytes == 0


async def test_metadata_rpcs_answer_while_s3_is_down(suite: Any, s3_proxy: TcpProxy) -> None:
    files = await start_behind(suite, s3_proxy)
    data = random_bytes(1000)
    stored, _ = await files.upload(data)
    upload = UploadCall(files)
    await upload.start()

    s3_proxy.pause()
    md = files.md("alice")
    calls = {
        "GetFile": files.stub.GetFile(files_pb2.GetFileRequest(name=stored.name), metadata=md),
        "ListFiles": files.stub.ListFiles(files_pb2.ListFilesRequest(), metadata=md),
        "ListFileVersions": files.stub.ListFileVersions(
            files_pb2.ListFileVersionsRequest(name=stored.name), metadata=md
        ),
        "GetUploadStatus": files.stub.GetUploadStatus(
            files_pb2.GetUploadStatusRequest(name=upload.upload), metadata=md
        ),
        "CreateDownloadUrl": files.stub.CreateDownloadUrl(
            files_pb2.CreateDownloadUrlRequest(name=stored.name), metadata=md
        ),
    }
    answered = {}
    for name, call in calls.items():
        answered[name] = await asyncio.wait_for(call, 5.0)
    # A transfer fails within its bound instead.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.download(stored.name)
    print(f"S3 down: {len(answered)} metadata RPCs answered; Download {caught.value.code().name}")
    assert answered["GetFile"].file.sha256 == sha(data)
    assert [f.name for f in answered["ListFiles"].files] == [stored.name]
    assert answered["CreateDownloadUrl"].url
    assert_s3_unavailable(caught.value)
    s3_proxy.resume()
    upload.call.cancel()


async def serving_status(files: Files) -> int:
    stub = health_pb2_grpc.HealthStub(files.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=FILES_SERVICE), timeout=5)
    return int(response.status)


async def eventually(check: Any, wanted: Any, seconds: float = 15.0) -> Any:
    """Poll ``await check()`` until it returns ``wanted``; return the last value."""
    deadline = time.monotonic() + seconds
    value = await check()
    while value != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await check()
    return value


async def test_breaker_opens_while_s3_is_down_and_closes_after(
    suite: Any, s3_proxy: TcpProxy
) -> None:
    files = await start_behind(
        suite,
        s3_proxy,
        s3_call_timeout_seconds=1.0,
        s3_transfer_timeout_seconds=1.5,
        breaker_min_calls=3,
        breaker_open_seconds=2.0,
    )
    breaker = files.ctx.dependencies.s3.breaker
    data = random_bytes(3000)
    stored, _ = await files.upload(data)
    assert await serving_status(files) == health_pb2.HealthCheckResponse.SERVING

    await s3_proxy.refuse()
    await s3_proxy.close_connections()
    statuses: Counter[str] = Counter()
    failed_downloads = 0
    while breaker.state != "open" and failed_downloads < 20:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await files.download(stored.name)
        assert_s3_unavailable(caught.value)
        failed_downloads += 1
        statuses["Download:" + caught.value.code().name] += 1
    assert breaker.state == "open"

    # While open, transfers are refused without reaching S3: the ErrorInfo says so.
    refused = {}
    for name, transfer in {
        "Download": files.download(stored.name),
        "Upload": files.upload(random_bytes(100)),
    }.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transfer
        assert_s3_unavailable(caught.value)
        info = error_info(caught.value)
        assert info is not None
        refused[name] = info.metadata.get("circuit")
        statuses[f"{name}:{caught.value.code().name}:circuit-{refused[name]}"] += 1
    assert refused == {"Download": "open", "Upload": "open"}

    md = files.md("alice")
    got = await files.stub.GetFile(files_pb2.GetFileRequest(name=stored.name), metadata=md)
    listed = await files.stub.ListFiles(files_pb2.ListFilesRequest(), metadata=md)
    url = await files.stub.CreateDownloadUrl(
        files_pb2.CreateDownloadUrlRequest(name=stored.name), metadata=md
    )
    assert got.file.sha256 == sha(data) and len(listed.files) == 1 and url.url
    statuses["metadata:OK"] += 3
    not_serving = await eventually(
        lambda: serving_status(files), health_pb2.HealthCheckResponse.NOT_SERVING
    )
    assert not_serving == health_pb2.HealthCheckResponse.NOT_SERVING

    await s3_proxy.accept()
    # Closed again once the open period is over and a probe went through.
    state = await eventually(lambda: _state(breaker), "closed")
    assert state == "closed"
    again = random_bytes(PART + 77)
    file, _ = await files.upload(again)
    assert await files.download(file.name) == again
    assert await files.download(stored.name) == data
    serving = await eventually(
        lambda: serving_status(files), health_pb2.HealthCheckResponse.SERVING
    )
    print(
        f"breaker: {failed_downloads} failed downloads opened it; statuses {dict(statuses)}; "
        f"closed again, 1 upload and 2 downloads byte-identical after"
    )
    assert serving == health_pb2.HealthCheckResponse.SERVING


async def _state(breaker: Any) -> str:
    return str(breaker.state)


async def test_answers_of_a_working_s3_never_count_against_the_breaker(settings: Any) -> None:
    storage = await Storage.open(AwsClients(settings), "breaker-test", create=True)
    try:
        await storage.put_object("a/one", b"1", "text/plain", {})
        operations: Counter[str] = Counter()
        for _ in range(5):
            with pytest.raises(NotFound):
                await storage.head("a/missing")
            operations["head missing: NOT_FOUND"] += 1
            assert [k for k, _ in await storage.version_ids("a/")] == ["a/one"]
            operations["list versions (ends)"] += 1
            assert [u async for u in storage.list_multipart_uploads()] == []
            operations["list multipart uploads (empty)"] += 1
            await storage.abort_multipart("a/one", "no-such-upload")
            operations["abort unknown upload"] += 1
        calls, failures = storage.dependency.breaker.counts()
        print(f"breaker after {dict(operations)}: {calls} calls, {failures} failures")
        assert failures == 0 and calls >= sum(operations.values())
        assert storage.dependency.breaker.state == "closed"
    finally:
        await storage.close()


async def upload_resuming(files: Files, data: bytes, seen: Counter[str]) -> file_pb2.File:
    """Upload ``data``; after an UNAVAILABLE, resume from the committed offset (as a client
    following the RetryInfo does) until the file is committed."""
    upload = ""
    for _ in range(20):
        rpc = "resume" if upload else "Upload"
        try:
            if not upload:
                call = UploadCall(files)
                await call.start(display_name="flaky.bin", size_bytes=len(data), sha256=sha(data))
                upload = call.upload
                await call.send(data)
                await call.call.done_writing()
                while (response := await call.call.read()) is not grpc.aio.EOF:
                    last = response
                seen["Upload:OK"] += 1
                return last.file
            file = await resume(files, upload, data)
            seen["resume:OK"] += 1
            return file
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            seen[f"{rpc}:UNAVAILABLE"] += 1
            await asyncio.sleep(0.5)
    raise AssertionError(f"{upload or 'the upload'} never committed: {dict(seen)}")


async def download_retrying(files: Files, name: str, seen: Counter[str]) -> bytes:
    for _ in range(20):
        try:
            data = await files.download(name)
            seen["Download:OK"] += 1
            return data
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            seen["Download:UNAVAILABLE"] += 1
            await asyncio.sleep(0.5)
    raise AssertionError(f"{name} never downloaded: {dict(seen)}")


@pytest.mark.faults
async def test_uploads_survive_s3_connections_cut_at_random(suite: Any, s3_proxy: TcpProxy) -> None:
    files = await start_behind(suite, s3_proxy, s3_call_timeout_seconds=10.0)
    stop = asyncio.Event()
    cuts = 0

    async def cut_connections() -> None:
        nonlocal cuts
        rng = random.Random(11)
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            await s3_proxy.close_connections()
            s3_proxy.to_drop = 1  # and the next connection is reset at once
            cuts += 1

    cutter = asyncio.create_task(cut_connections())
    seen: Counter[str] = Counter()
    payloads = [random_bytes(2 * PART + 1000 * i) for i in range(4)]
    try:
        names = [(await upload_resuming(files, data, seen)).name for data in payloads]
        downloaded = [await download_retrying(files, name, seen) for name in names]
    finally:
        stop.set()
        await cutter
    print(f"cut S3 connections {cuts} times; {len(payloads)} uploads; statuses {dict(seen)}")
    assert cuts > 0
    assert downloaded == payloads
    assert seen["Upload:OK"] + seen["resume:OK"] == len(payloads)


@pytest.mark.parametrize("completed", [False, True], ids=["not-completed", "answer-lost"])
async def test_a_failed_completion_resumes_with_every_byte_committed(
    files: Files, monkeypatch: pytest.MonkeyPatch, completed: bool
) -> None:
    """The stream fails at CompleteMultipartUpload, after its short last part was recorded:
    either S3 never got the request, or S3 completed it and the answer was lost. The resume
    (with no data, at the end) completes with every part, or adopts what S3 completed."""
    original = Storage.complete_multipart
    calls: Counter[str] = Counter()

    async def failing_once(self: Storage, *args: Any) -> Any:
        calls["complete"] += 1
        if calls["complete"] == 1:
            if completed:
                await original(self, *args)
            raise Unavailable("injected: connection lost", reason="S3_UNAVAILABLE")
        return await original(self, *args)

    monkeypatch.setattr(Storage, "complete_multipart", failing_once)
    data = random_bytes(2 * PART + 4321)
    outcome = await upload_outcome(files, [header_msg(sha256=sha(data)), *data_msgs(data)])
    assert outcome[:2] == (grpc.StatusCode.UNAVAILABLE, "S3_UNAVAILABLE")
    upload = outcome[2][0].progress.upload
    assert (await status_of(files, upload)).committed_bytes == len(data)

    file = await resume(files, upload, data)
    print(f"completion failed ({'answer lost' if completed else 'not sent'}): {dict(calls)}")
    assert file.size_bytes == len(data) and file.sha256 == sha(data)
    assert await files.download(file.name) == data
    versions = await files.stub.ListFileVersions(
        files_pb2.ListFileVersionsRequest(name=file.name), metadata=files.md("alice")
    )
    assert len(versions.versions) == 1
