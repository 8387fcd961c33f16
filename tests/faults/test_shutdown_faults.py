"""SIGTERM to the server and its worker while uploads stream and jobs run, as a deployment
stops every process at once; then a new server and worker take over the same stores.

Nothing may be left half done: every job finishes (at once, or released to the queue and
run by the next worker), every upload is either committed whole or resumable from its
committed offset, and no file record exists for bytes that were not all stored.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from mediagrid.files.v1 import file_service_pb2, file_service_pb2_grpc
from mediagrid.jobs.v1 import job_service_pb2_grpc

from tests.faults.conftest import FaultSuiteFactory
from tests.faults.jobs_load import create_jobs, job_rows, run_verdict, states, wait_all_final
from tests.faults.scenario import Tally, bearer, call, eventually
from tests.faults.uploads import MiB, UploadOutcome, download, upload, upload_status

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PART = 5 * MiB
JOBS = 30
UPLOADS = 3
GRACE = 3


async def test_sigterm_during_uploads_and_jobs_leaves_nothing_half_done(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(
        upload_part_size_bytes=PART,
        job_lease_seconds=5,
        job_reaper_interval_seconds=1,
        job_owner_max_running=0,
        worker_claim_wait_seconds=1,
        grpc_shutdown_grace_seconds=GRACE,
        worker_shutdown_grace_seconds=GRACE,
    )
    server = await suite.serve("all", name="server1")
    worker_token = await suite.service_token()
    _, token = await suite.user_token("gina@example.com")
    await suite.worker(server, ["faults.record"], worker_token, name="worker1", concurrency=8)
    tally = Tally()
    figures: dict[str, object] = {}
    blobs = [random.Random(n).randbytes(3 * PART + n * 100_003) for n in range(UPLOADS)]
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            jobs = job_service_pb2_grpc.JobServiceStub(channel)
            files = file_service_pb2_grpc.FileServiceStub(channel)
            names = await create_jobs(
                jobs, token, tally, JOBS, payload={"seconds": 2, "steps": 4}, prefix="s"
            )

            def paced(pause: float) -> Callable[[int, UploadOutcome], Awaitable[None]]:
                async def wait(offset: int, outcome: UploadOutcome) -> None:
                    await asyncio.sleep(pause)

                return wait

            # From a client that finishes within the grace period to one that cannot.
            streams = [
                asyncio.create_task(
                    upload(files, token, data, tally=tally, before_chunk=paced(pause))
                )
                for data, pause in zip(blobs, (0.1, 0.4, 0.8), strict=True)
            ]
            # The signal comes once jobs run (the worker may still be starting) and uploads
            # are part-way.
            running = await eventually(
                lambda: _running(suite.direct_dsn), what="jobs running", limit=60, every=0.2
            )
            figures["jobs running at the signal"] = running
            assert running > 0
            stopped_at = time.monotonic()
            first = [c for c in suite.children if c.name in ("server1", "worker1")]
            for child in first:
                child.signal(signal.SIGTERM)
            outcomes = await asyncio.gather(*streams)
            codes = {child.name: await child.wait(GRACE + 15) for child in first}
            for child in first:  # one that hangs is killed, so that the rest can be checked
                await child.stop(0)
            figures["exit codes"] = codes
            figures["stopped within"] = f"{time.monotonic() - stopped_at:.1f}s"
            figures["uploads at the signal"] = [
                f"{o.code} committed {o.committed}" for o in outcomes
            ]
            figures["job states after the stop"] = dict(await states(suite.direct_dsn))

        # A new server and worker on the same stores.
        server = await suite.serve("all", name="server2")
        await suite.worker(server, ["faults.record"], worker_token, name="worker2", concurrency=8)
        async with grpc.aio.insecure_channel(server.address) as channel:
            files = file_service_pb2_grpc.FileServiceStub(channel)
            finished = await finish_uploads(files, token, tally, outcomes, blobs, figures)
            listed = await files.ListFiles(
                file_service_pb2.ListFilesRequest(page_size=100), metadata=bearer(token), timeout=10
            )
            intact = 0
            for record in listed.files:
                stored = await download(files, token, record.name)
                intact += stored in blobs and len(stored) == record.size_bytes
            figures["file records"] = len(listed.files)
            figures["file records with all their bytes"] = intact
        seen = await wait_all_final(suite.direct_dsn, JOBS, limit=90)
        rows = await job_rows(suite.direct_dsn, names)
        verdict = run_verdict(suite.run_log, rows)
        figures["final job states"] = dict(seen)
        figures.update({k: (len(v) if isinstance(v, list) else v) for k, v in verdict.items()})
    finally:
        tally.report("SIGTERM during uploads and jobs", **figures)
    # Both stopped by themselves, in time, with exit code 0.
    assert codes == {"server1": 0, "worker1": 0}, codes
    assert finished == UPLOADS
    assert len(listed.files) == UPLOADS and intact == UPLOADS  # no partial file record
    assert dict(seen) == {"succeeded": JOBS}
    assert verdict["never completed a run"] == []
    assert verdict["beyond at-least-once"] == []
    assert tally.never_seen() == {}


async def _running(dsn: str) -> int:
    return (await states(dsn))["running"]


async def finish_uploads(
    files: file_service_pb2_grpc.FileServiceStub,
    token: str,
    tally: Tally,
    outcomes: list[UploadOutcome],
    blobs: list[bytes],
    figures: dict[str, object],
) -> int:
    """Every upload the signal interrupted is resumable: resume it and check the bytes."""
    finished = 0
    states_after: list[str] = []
    for outcome, data in zip(outcomes, blobs, strict=True):
        if outcome.file is not None:
            finished += await download(files, token, outcome.file.name) == data
            states_after.append("committed before the stop")
            continue
        assert outcome.upload, "an interrupted upload had no session to resume"
        status = await call(
            tally,
            "GetUploadStatus (after)",
            lambda o=outcome: upload_status(files, token, o.upload),
        )
        assert status is not None
        states_after.append(
            f"{file_service_pb2.UploadState.Name(status.state)} at {status.committed_bytes}"
        )
        resumed = await upload(
            files,
            token,
            data,
            tally=tally,
            rpc="Upload (resumed)",
            upload_name=outcome.upload,
            offset=status.committed_bytes,
        )
        assert resumed.file is not None, resumed.error
        finished += await download(files, token, resumed.file.name) == data
    figures["uploads after the restart"] = states_after
    return finished
