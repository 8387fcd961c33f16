"""S3 failing under a running suite (subprocess server, moto behind an HTTP-aware proxy):
refused then blackholed during an upload, and failing 10 % of its requests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time

import grpc
import pytest
from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc

from common.grpc_errors import error_info, retry_info
from tests.faults.conftest import FaultSuiteFactory
from tests.faults.scenario import Tally, bearer, call, eventually
from tests.faults.uploads import MiB, UploadOutcome, download, upload, upload_status
from tests.support.suite_process import FaultSuite, health_status

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PART = 5 * MiB
# S3 calls give up quickly here, so that a dead endpoint is reported in seconds.
S3_SETTINGS = {
    "upload_part_size_bytes": PART,
    "upload_concurrency": 2,
    "s3_connect_timeout_seconds": 2,
    "s3_read_timeout_seconds": 5,
    "s3_max_attempts": 2,
    "s3_call_timeout_seconds": 5,
    "s3_transfer_timeout_seconds": 5,
    "health_failures_before_not_serving": 1,
    # Long enough to hold every failure of the blackholed stage: the breaker must open there.
    "breaker_window_seconds": 60,
}
# What those settings allow one S3 operation (a part transfer or a small call, retries
# included), with room for the part already in flight: the stream must end within this.
S3_BOUND = 15.0
SLACK = 2.0
METADATA_DEADLINE = 10.0
# Twice the bound: a stream still open then is the server waiting, not the client giving up.
FAULT_DEADLINE = 2 * S3_BOUND
# A client resuming against a dead S3 sees its breaker open within this many tries.
RESUMES_UNTIL_OPEN = 6
# After S3 is back: the breaker's open period, a half-open trial and the transfer itself.
RECOVERY = 30.0


async def metadata_rpcs(
    stub: file_service_pb2_grpc.FileServiceStub,
    token: str,
    tally: Tally,
    file: str,
    upload_name: str,
) -> None:
    """The RPCs that need only PostgreSQL: they must keep answering while S3 is away."""
    md = bearer(token)
    await call(
        tally,
        "GetFile",
        lambda: stub.GetFile(file_service_pb2.GetFileRequest(name=file), metadata=md, timeout=10),
    )
    await call(
        tally,
        "ListFiles",
        lambda: stub.ListFiles(file_service_pb2.ListFilesRequest(), metadata=md, timeout=10),
    )
    await call(tally, "GetUploadStatus", lambda: upload_status(stub, token, upload_name))


async def test_s3_refused_then_blackholed_during_an_upload(fault_suite: FaultSuiteFactory) -> None:
    suite = await fault_suite(**S3_SETTINGS)
    server = await suite.serve("all")
    _, token = await suite.user_token("carol@example.com")
    tally = Tally()
    figures: dict[str, object] = {}
    data = random.Random(1).randbytes(4 * PART + 3 * MiB)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            await refused_then_blackholed(
                suite, server.address, channel, token, tally, figures, data
            )
    finally:
        tally.report("S3 refused, then blackholed, during an upload", **figures)
    assert tally.never_seen() == {}


def check_unavailable_in_bound(outcome: UploadOutcome, what: str) -> None:
    assert outcome.code == "UNAVAILABLE", (what, outcome.code, outcome.error)
    assert outcome.failed_after <= S3_BOUND + SLACK, (what, outcome.failed_after)


async def refused_then_blackholed(
    suite: FaultSuite,
    address: str,
    channel: grpc.aio.Channel,
    token: str,
    tally: Tally,
    figures: dict[str, object],
    data: bytes,
) -> None:
    files = file_service_pb2_grpc.FileServiceStub(channel)
    earlier = await upload(files, token, b"kept" * 1000, tally=tally, rpc="Upload (before)")
    assert earlier.file is not None, earlier.error
    figures["upload bytes"] = len(data)

    # 1. S3 refuses connections once a part is stored and the stream is in its third.
    clock = [0.0]

    async def refuse_in_third_part(offset: int, outcome: UploadOutcome) -> None:
        if offset == 2 * PART:
            await wait_for_committed(files, token, outcome, PART)
            await suite.s3_proxy.refuse()
            await suite.s3_proxy.close_connections()
            clock[0] = time.monotonic()
            tally.counts["faults: S3 refused"] += 1

    first = await upload(
        files,
        token,
        data,
        tally=tally,
        before_chunk=refuse_in_third_part,
        clock=clock,
        deadline=FAULT_DEADLINE,
    )
    figures["refused stream"] = f"{first.code} {first.failed_after:.1f}s after the fault"
    figures["committed before the fault"] = first.committed
    assert first.upload and first.committed >= PART, first
    check_unavailable_in_bound(first, "stream while S3 refuses")
    await metadata_rpcs(files, token, tally, earlier.file.name, first.upload)
    # Health: only the services that need S3 are out; users, jobs and the overall status
    # stay SERVING.
    health = await eventually(
        lambda: _health_once_files_out(address),
        what="FileService NOT_SERVING while S3 is away",
        limit=30,
    )
    figures["health while S3 is away"] = health
    assert health == {**{name: "SERVING" for name in STAYS}, FILES: "NOT_SERVING"}, health

    # 2. S3 accepts connections again but never answers; the client keeps resuming, as a
    #    client does, until S3's breaker opens and refuses at once.
    await suite.s3_proxy.accept()
    suite.s3_proxy.pause()
    tally.counts["faults: S3 blackholed"] += 1
    status = await upload_status(files, token, first.upload, deadline=METADATA_DEADLINE)
    attempts = []
    while len(attempts) < RESUMES_UNTIL_OPEN:
        clock[0] = time.monotonic()
        attempt = await upload(
            files,
            token,
            data,
            tally=tally,
            rpc="Upload (resume while blackholed)",
            upload_name=first.upload,
            offset=status.committed_bytes,
            clock=clock,
            deadline=FAULT_DEADLINE,
        )
        attempts.append(attempt)
        n = len(attempts)
        figures[f"resume {n} while blackholed"] = f"{attempt.code} {attempt.failed_after:.1f}s"
        check_unavailable_in_bound(attempt, f"resume {n} while blackholed")
        if "circuit=open" in attempt.metadata_values:
            break
    figures["error metadata"] = sorted(set().union(*(o.metadata_values for o in attempts)))
    await metadata_rpcs(files, token, tally, earlier.file.name, first.upload)
    for rpc in ("GetFile", "ListFiles", "GetUploadStatus"):
        assert tally.statuses[(rpc, "OK")] == 2, (rpc, tally.statuses)
    # The breaker opened, and then refused at once.
    assert "circuit=open" in attempts[-1].metadata_values, "S3's breaker never opened"
    assert attempts[-1].failed_after <= SLACK, attempts[-1].failed_after

    # 3. S3 is back: the client resumes from the committed offset, waiting what RetryInfo
    #    says while the breaker is still open, and the upload completes.
    suite.s3_proxy.heal()
    healed = time.monotonic()
    while True:
        status = await resume_status(files, token, tally, first.upload)
        figures["resumed from"] = status.committed_bytes
        third = await upload(
            files,
            token,
            data,
            tally=tally,
            rpc="Upload (resume after)",
            upload_name=first.upload,
            offset=status.committed_bytes,
        )
        if third.error is None or time.monotonic() - healed > RECOVERY:
            break
        hint = retry_info(third.error)
        await asyncio.sleep(hint.retry_delay.ToTimedelta().total_seconds() if hint else 1.0)
    figures["completed after S3 came back"] = f"{time.monotonic() - healed:.1f}s"
    figures["resume after"] = third.code
    assert third.file is not None, third.error
    stored = await download(files, token, third.file.name)
    figures["byte identical"] = stored == data
    assert stored == data
    assert third.file.sha256 == hashlib.sha256(data).hexdigest()


FILES = "mediagrid.files.v1.FileService"
STAYS = ("", "mediagrid.users.v1.UserService", "mediagrid.jobs.v1.JobService")


async def _health_once_files_out(address: str) -> dict[str, str] | None:
    """Every name's health, once the files service reports NOT_SERVING."""
    if await health_status(address, FILES) != "NOT_SERVING":
        return None
    return {name: await health_status(address, name) for name in (*STAYS, FILES)}


async def wait_for_committed(
    stub: file_service_pb2_grpc.FileServiceStub, token: str, outcome: UploadOutcome, at_least: int
) -> None:
    """Until the upload's committed offset reaches ``at_least`` (asked with GetUploadStatus:
    the stream reports progress only as data arrives, and this runs inside the request
    stream, which must not raise: that would cancel the call)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if outcome.upload:
            with contextlib.suppress(grpc.aio.AioRpcError):
                status = await upload_status(stub, token, outcome.upload)
                outcome.committed = max(outcome.committed, status.committed_bytes)
        if outcome.committed >= at_least:
            return
        await asyncio.sleep(0.1)


async def resume_status(
    stub: file_service_pb2_grpc.FileServiceStub, token: str, tally: Tally, name: str
) -> file_service_pb2.Upload:
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
        files = file_service_pb2_grpc.FileServiceStub(channel)
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


# A hung S3 under downloads: the read's first bytes are bounded like a small call, not like
# a transfer, and with the breaker's default window the failures are too slow to fill it.
HUNG_SETTINGS = {
    "s3_connect_timeout_seconds": 2,
    "s3_read_timeout_seconds": 60,
    "s3_max_attempts": 1,
    "s3_call_timeout_seconds": 3,
    "s3_transfer_timeout_seconds": 60,
    "health_check_interval_seconds": 30,  # only the downloads reach S3 while it hangs
}


async def test_downloads_fail_within_the_call_bound_and_open_the_breaker_when_s3_hangs(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(**HUNG_SETTINGS)
    server = await suite.serve("all")
    _, token = await suite.user_token("dave@example.com")
    tally = Tally()
    figures: dict[str, object] = {}
    data = random.Random(2).randbytes(3 * MiB)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            files = file_service_pb2_grpc.FileServiceStub(channel)
            stored = await upload(files, token, data, tally=tally)
            assert stored.file is not None, stored.error
            suite.s3_proxy.pause()
            tally.counts["faults: S3 hung"] += 1
            outcomes: list[tuple[str, float, str]] = []
            for _ in range(5):
                started = time.monotonic()
                try:
                    await download(files, token, stored.file.name)
                    outcomes.append(("OK", time.monotonic() - started, ""))
                except grpc.aio.AioRpcError as exc:
                    seconds = time.monotonic() - started
                    tally.failed("Download (S3 hung)", exc, seconds)
                    info = error_info(exc)
                    circuit = info.metadata.get("circuit", "") if info is not None else ""
                    outcomes.append((exc.code().name, seconds, circuit))
            figures["downloads while S3 hangs"] = [f"{c} {s:.1f}s {o}" for c, s, o in outcomes]
            assert all(code == "UNAVAILABLE" for code, _, _ in outcomes), outcomes
            # Each waits out at most the call bound (3 s), never the transfer bound (60 s).
            assert all(seconds <= 3 + SLACK for _, seconds, _ in outcomes), outcomes
            # Three timeouts in a row open the breaker: later downloads are refused at once.
            assert [circuit for _, _, circuit in outcomes[3:]] == ["open", "open"], outcomes
            assert outcomes[3][1] <= SLACK and outcomes[4][1] <= SLACK, outcomes
            suite.s3_proxy.heal()
            healed = time.monotonic()
            while True:
                try:
                    again = await download(files, token, stored.file.name)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert time.monotonic() - healed < RECOVERY, "S3 never came back"
                    await asyncio.sleep(0.5)
            figures["download after S3 came back"] = f"{time.monotonic() - healed:.1f}s"
            assert again == data
    finally:
        tally.report("S3 hung under downloads", **figures)
