"""S3 failing under a running suite (subprocess server, moto behind an HTTP-aware proxy):
refused then blackholed during an upload, and failing 10 % of its requests."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import grpc
import pytest
from mediagrid.files.v1 import files_pb2, files_pb2_grpc

from tests.faults.conftest import FaultSuiteFactory
from tests.faults.scenario import Tally, bearer, call
from tests.faults.uploads import MiB, UploadOutcome, download, upload, upload_status

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PART = 5 * MiB
# S3 calls give up quickly here, so that a dead endpoint is reported in seconds.
S3_SETTINGS = {
    "upload_part_size_bytes": PART,
    "upload_concurrency": 2,
    "s3_connect_timeout_seconds": 2,
    "s3_read_timeout_seconds": 5,
    "s3_max_attempts": 2,
    "health_failures_before_not_serving": 1,
}
# What those settings allow one S3 operation (attempts x (connect or read timeout) plus
# backoff), with room for the part already in flight: the stream must end within this.
S3_BOUND = 15.0
SLACK = 2.0
METADATA_DEADLINE = 10.0


async def metadata_rpcs(
    stub: files_pb2_grpc.FileServiceStub, token: str, tally: Tally, file: str, upload_name: str
) -> None:
    """The RPCs that need only PostgreSQL: they must keep answering while S3 is away."""
    md = bearer(token)
    await call(
        tally,
        "GetFile",
        lambda: stub.GetFile(files_pb2.GetFileRequest(name=file), metadata=md, timeout=10),
    )
    await call(
        tally,
        "ListFiles",
        lambda: stub.ListFiles(files_pb2.ListFilesRequest(), metadata=md, timeout=10),
    )
    await call(tally, "GetUploadStatus", lambda: upload_status(stub, token, upload_name))


async def test_s3_refused_then_blackholed_during_an_upload(fault_suite: FaultSuiteFactory) -> None:
    suite = await fault_suite(**S3_SETTINGS)
    server = await suite.serve("all")
    _, token = await suite.user_token("carol@example.com")
    tally = Tally()
    data = random.Random(1).randbytes(4 * PART + 3 * MiB)
    async with grpc.aio.insecure_channel(server.address) as channel:
        files = files_pb2_grpc.FileServiceStub(channel)
        earlier = await upload(files, token, b"kept" * 1000, tally=tally, rpc="Upload (before)")
        assert earlier.file is not None, earlier.error

        # 1. S3 refuses connections once a part is stored and the stream is in its third.
        clock = [0.0]

        async def refuse_after_two_parts(offset: int, outcome: UploadOutcome) -> None:
            if offset == 2 * PART:
                await wait_for_committed(outcome, PART)
                await suite.s3_proxy.refuse()
                await suite.s3_proxy.close_connections()
                clock[0] = time.monotonic()
                tally.counts["faults: S3 refused"] += 1

        first = await upload(
            files, token, data, tally=tally, before_chunk=refuse_after_two_parts, clock=clock
        )
        assert first.upload, "no progress was reported"
        await metadata_rpcs(files, token, tally, earlier.file.name, first.upload)

        # 2. S3 accepts connections again but never answers; a resume is tried.
        await suite.s3_proxy.accept()
        suite.s3_proxy.pause()
        tally.counts["faults: S3 blackholed"] += 1
        status = await upload_status(files, token, first.upload, deadline=METADATA_DEADLINE)
        clock[0] = time.monotonic()
        second = await upload(
            files,
            token,
            data,
            tally=tally,
            rpc="Upload (resume while blackholed)",
            upload_name=first.upload,
            offset=status.committed_bytes,
            clock=clock,
        )
        await metadata_rpcs(files, token, tally, earlier.file.name, first.upload)
        # Retries against a dead endpoint: the breaker should fail them at once.
        quick = []
        for _ in range(3):
            clock[0] = time.monotonic()
            quick.append(
                await upload(
                    files,
                    token,
                    data,
                    tally=tally,
                    rpc="Upload (retry while blackholed)",
                    upload_name=first.upload,
                    offset=status.committed_bytes,
                    clock=clock,
                )
            )

        # 3. S3 is back: the upload resumes from the committed offset and completes.
        suite.s3_proxy.heal()
        await asyncio.sleep(0.5)
        status = await resume_status(files, token, tally, first.upload)
        third = await upload(
            files,
            token,
            data,
            tally=tally,
            rpc="Upload (resume after)",
            upload_name=first.upload,
            offset=status.committed_bytes,
        )
        stored = await download(files, token, third.file.name) if third.file else b""
    tally.report(
        "S3 refused, then blackholed, during an upload",
        operations=sum(tally.statuses.values()),
        upload_bytes=len(data),
        refused_stream=f"{first.code} after {first.failed_after:.1f}s, committed {first.committed}",
        blackholed_resume=f"{second.code} after {second.failed_after:.1f}s",
        retries_while_blackholed=[f"{o.code} {o.failed_after:.1f}s" for o in quick],
        error_metadata=sorted(set().union(*(o.metadata_values for o in (first, second, *quick)))),
        resumed_from=status.committed_bytes,
        final=third.code,
        byte_identical=stored == data,
    )
    for outcome in (first, second, *quick):
        assert outcome.code == "UNAVAILABLE", (outcome.code, outcome.error)
        assert outcome.failed_after <= S3_BOUND + SLACK, outcome.failed_after
    assert first.committed >= PART
    # The breaker opened: some refusal says so.
    assert any("open" in value for o in (second, *quick) for value in o.metadata_values), (
        "no UNAVAILABLE named an open breaker"
    )
    for rpc in ("GetFile", "ListFiles", "GetUploadStatus"):
        assert tally.statuses[(rpc, "OK")] == 2, (rpc, tally.statuses)
    assert third.file is not None, third.error
    assert stored == data
    assert third.file.sha256 == hashlib.sha256(data).hexdigest()
    assert tally.never_seen() == {}


async def wait_for_committed(outcome: UploadOutcome, at_least: int) -> None:
    """Runs inside the request stream: it must not raise (that cancels the call); the
    scenario checks the committed offset afterwards."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if outcome.committed >= at_least:
            break
        await asyncio.sleep(0.05)


async def resume_status(
    stub: files_pb2_grpc.FileServiceStub, token: str, tally: Tally, name: str
) -> files_pb2.Upload:
    """GetUploadStatus until it answers (the server may still be draining the broken parts)."""
    for _ in range(30):
        status = await call(
            tally, "GetUploadStatus (after)", lambda: upload_status(stub, token, name)
        )
        if status is not None:
            return status
        await asyncio.sleep(1)
    raise AssertionError("GetUploadStatus never answered after S3 came back")


UPLOADS = 20


async def test_every_upload_succeeds_while_s3_fails_10_percent_of_requests(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(upload_part_size_bytes=PART, upload_concurrency=2)
    server = await suite.serve("all")
    _, token = await suite.user_token("dave@example.com")
    tally = Tally()
    rng = random.Random(5)
    blobs = [rng.randbytes(rng.randrange(3 * MiB, 12 * MiB)) for _ in range(UPLOADS)]
    suite.s3_proxy.fail_requests(0.10, seed=11)
    async with grpc.aio.insecure_channel(server.address) as channel:
        files = files_pb2_grpc.FileServiceStub(channel)
        gate = asyncio.Semaphore(4)

        async def one(data: bytes) -> UploadOutcome:
            async with gate:
                return await upload(files, token, data, tally=tally)

        outcomes = await asyncio.gather(*(one(data) for data in blobs))
        requests, failed = suite.s3_proxy.requests, dict(suite.s3_proxy.failed_by_kind)
        suite.s3_proxy.heal()
        identical = 0
        for outcome, data in zip(outcomes, blobs, strict=True):
            if outcome.file is not None and await download(files, token, outcome.file.name) == data:
                identical += 1
    tally.report(
        "S3 failing 10 % of requests",
        uploads=UPLOADS,
        upload_bytes=sum(map(len, blobs)),
        s3_requests_seen=requests,
        s3_requests_failed=failed,
        succeeded=sum(1 for o in outcomes if o.file is not None),
        byte_identical=identical,
        failures=[f"{o.code}: {o.error.details() if o.error else ''}" for o in outcomes if o.error],
    )
    assert sum(failed.values()) > 0, "the proxy injected no fault"
    assert [o.code for o in outcomes] == ["OK"] * UPLOADS
    assert identical == UPLOADS
