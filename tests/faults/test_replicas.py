"""Two replicas of the whole suite on one database and one S3 endpoint, a client balancing
between them (gRPC round_robin over both addresses), as a scaled-out deployment runs."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from mediagrid.files.v1 import file_service_pb2_grpc
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2 as users_pb2
from mediagrid.users.v1 import user_service_pb2_grpc as users_pb2_grpc

from common.grpc_errors import error_info
from tests.faults.conftest import FaultSuiteFactory
from tests.faults.jobs_load import create_jobs
from tests.faults.scenario import Tally, bearer, call
from tests.faults.uploads import MiB, UploadOutcome, download, upload, upload_status
from tests.support.suite_process import FaultSuite

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PART = 5 * MiB
AUTH_TTL = 2.0
SLACK = 2.0


def balanced(*addresses: str) -> grpc.aio.Channel:
    targets = ",".join(addresses)
    return grpc.aio.insecure_channel(
        f"ipv4:{targets}", options=[("grpc.lb_policy_name", "round_robin")]
    )


async def test_two_replicas_share_uploads_progress_and_revocations(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(
        upload_part_size_bytes=PART,
        auth_cache_ttl_seconds=AUTH_TTL,
        job_owner_max_running=0,
        worker_claim_wait_seconds=1,
    )
    one = await suite.serve("all", name="replica1")
    two = await suite.serve("all", name="replica2")
    worker_token = await suite.service_token()
    # The only worker talks to replica 2: the watch below is on replica 1.
    await suite.worker(two, ["faults.record"], worker_token, concurrency=2)
    tally = Tally()
    figures: dict[str, object] = {}
    try:
        async with (
            grpc.aio.insecure_channel(one.address) as to_one,
            grpc.aio.insecure_channel(two.address) as to_two,
            balanced(one.address, two.address) as both,
        ):
            _, token = await suite.user_token("erin@example.com")
            await upload_moves_between_replicas(to_one, to_two, both, token, tally, figures)
            await watch_sees_progress_through_the_other(to_one, token, tally, figures)
            await revocation_reaches_both(suite, to_one, to_two, both, tally, figures)
    finally:
        tally.report("two replicas, one database, one S3 endpoint", **figures)
    assert tally.never_seen() == {}


async def upload_moves_between_replicas(
    to_one: grpc.aio.Channel,
    to_two: grpc.aio.Channel,
    both: grpc.aio.Channel,
    token: str,
    tally: Tally,
    figures: dict[str, object],
) -> None:
    """Started on replica 1, the client vanishes mid-stream; replica 2 resumes it."""
    data = random.Random(2).randbytes(3 * PART + 123_457)
    on_one = file_service_pb2_grpc.FileServiceStub(to_one)
    on_two = file_service_pb2_grpc.FileServiceStub(to_two)
    broken = asyncio.Event()
    seen: list[UploadOutcome] = []

    async def break_after_a_part(offset: int, outcome: UploadOutcome) -> None:
        if offset >= 2 * PART and not broken.is_set():
            seen.append(outcome)
            # The session's name comes with the first progress message, which a busy
            # replica may send after the client has written several parts ahead.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if outcome.upload:
                    status = await upload_status(on_one, token, outcome.upload)
                    if status.committed_bytes >= PART:
                        break
                await asyncio.sleep(0.1)
            broken.set()
            await asyncio.sleep(3600)  # until the stream is cancelled from outside

    first = asyncio.create_task(
        upload(
            on_one,
            token,
            data,
            tally=tally,
            rpc="Upload (replica 1)",
            before_chunk=break_after_a_part,
        )
    )
    await asyncio.wait_for(broken.wait(), 60)
    first.cancel()  # the client goes away mid-stream
    await asyncio.gather(first, return_exceptions=True)
    assert seen and seen[0].upload, "replica 1 reported no upload session"
    name = seen[0].upload

    status = None
    for _ in range(30):
        status = await call(
            tally, "GetUploadStatus (replica 2)", lambda: upload_status(on_two, token, name)
        )
        if status is not None:
            break
        await asyncio.sleep(1)
    assert status is not None
    figures["upload committed on replica 1"] = status.committed_bytes
    offset = status.committed_bytes
    # Replica 1 may still be storing the parts it had received when the client vanished:
    # the resume protocol then answers WRONG_OFFSET naming the committed offset to use.
    for _ in range(5):
        resumed = await upload(
            on_two,
            token,
            data,
            tally=tally,
            rpc="Upload (resumed on replica 2)",
            upload_name=name,
            offset=offset,
        )
        info = error_info(resumed.error) if resumed.error is not None else None
        if info is None or info.reason != "WRONG_OFFSET":
            break
        offset = int(info.metadata["committed_offset"])
        figures["resume offset named by WRONG_OFFSET"] = offset
    figures["upload resumed on replica 2"] = resumed.code
    assert status.committed_bytes >= PART
    assert resumed.file is not None, resumed.error
    stored = await download(file_service_pb2_grpc.FileServiceStub(both), token, resumed.file.name)
    figures["upload byte identical"] = stored == data
    assert stored == data


async def watch_sees_progress_through_the_other(
    to_one: grpc.aio.Channel, token: str, tally: Tally, figures: dict[str, object]
) -> None:
    """The worker reports progress to replica 2; a WatchJob on replica 1 sees every step."""
    stub = job_service_pb2_grpc.JobServiceStub(to_one)
    names = await create_jobs(
        stub, token, tally, 1, payload={"seconds": 4, "steps": 4}, prefix="watched"
    )
    progress: list[float] = []
    final = ""

    async def watch() -> bool:
        nonlocal final
        stream = stub.WatchJob(
            job_service_pb2.WatchJobRequest(name=names[0]), metadata=bearer(token), timeout=60
        )
        async for reply in stream:
            progress.append(round(reply.job.progress_percent))
            final = job_pb2.JobState.Name(reply.job.state)
        return True

    await call(tally, "WatchJob (replica 1)", watch)
    distinct = sorted(set(progress))
    figures["progress seen on replica 1"] = distinct
    figures["watch ended on"] = final
    assert final == "JOB_STATE_SUCCEEDED"
    assert len([p for p in distinct if 0 < p < 100]) >= 2, progress


async def revocation_reaches_both(
    suite: FaultSuite,
    to_one: grpc.aio.Channel,
    to_two: grpc.aio.Channel,
    both: grpc.aio.Channel,
    tally: Tally,
    figures: dict[str, object],
) -> None:
    """A session revoked through the balanced channel is refused by both replicas within
    the auth cache's TTL (each replica may serve a cached principal until then)."""
    _, token = await suite.user_token("frank@example.com")
    replicas = {
        "replica 1": users_pb2_grpc.UserServiceStub(to_one),
        "replica 2": users_pb2_grpc.UserServiceStub(to_two),
    }
    me = users_pb2.GetUserRequest(name="users/me")
    for label, stub in replicas.items():  # both have the principal cached now
        reply = await stub.GetUser(me, metadata=bearer(token), timeout=10)
        assert reply.user.email == "frank@example.com", label
    await users_pb2_grpc.UserServiceStub(both).Logout(
        users_pb2.LogoutRequest(), metadata=bearer(token), timeout=10
    )
    revoked_at = time.monotonic()
    refused_after: dict[str, float] = {}
    while len(refused_after) < len(replicas) and time.monotonic() - revoked_at < 30:
        for label, stub in replicas.items():
            if label in refused_after:
                continue
            try:
                await stub.GetUser(me, metadata=bearer(token), timeout=10)
            except grpc.aio.AioRpcError as exc:
                tally.failed(f"GetUser after revoke ({label})", exc, 0.0)
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    refused_after[label] = time.monotonic() - revoked_at
        await asyncio.sleep(0.1)
    figures["revoked session refused after"] = {k: round(v, 2) for k, v in refused_after.items()}
    assert set(refused_after) == set(replicas), refused_after
    assert max(refused_after.values()) <= AUTH_TTL + SLACK, refused_after
