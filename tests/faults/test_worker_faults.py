"""A worker stalled longer than its lease: paused (SIGSTOP), then cut off from the database
behind its server. The lease expires, the reaper requeues the job and the same worker claims
it again while its first attempt is still running.

The job must not end DEAD, and its handler completes once: the stale attempt is cancelled
(it writes ``cancelled``, never ``done``) before the new one runs to the end, never both
at once.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from mediagrid.jobs.v1 import job_service_pb2_grpc

from tests.faults.conftest import FaultSuiteFactory
from tests.faults.jobs_load import create_jobs, job_rows
from tests.faults.scenario import Tally, eventually
from tests.support.suite_process import FaultSuite, run_counts

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

LEASE = 3.0
STALL = 3 * LEASE
JOB = {"seconds": 12, "steps": 12}  # reports progress every second: heartbeats and progress


async def test_a_worker_stalled_past_its_lease_completes_the_job_once(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(
        job_lease_seconds=LEASE,
        job_reaper_interval_seconds=1,
        worker_claim_wait_seconds=1,
        job_max_attempts_default=3,
    )
    server = await suite.serve("all")
    worker_token = await suite.service_token()
    _, token = await suite.user_token("hana@example.com")
    worker = await suite.worker(server, ["faults.record"], worker_token, concurrency=4)
    tally = Tally()
    figures: dict[str, object] = {}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)

            # 1. The worker process is paused (SIGSTOP) for three leases.
            paused = await run_one(suite, stub, token, tally, "paused")
            worker.signal(signal.SIGSTOP)
            tally.counts["faults: worker paused"] += 1
            await asyncio.sleep(STALL)
            worker.signal(signal.SIGCONT)
            figures["worker paused"] = await outcome(suite, paused)

            # 2. PostgreSQL unreachable behind the server for three leases.
            cut_off = await run_one(suite, stub, token, tally, "cut-off")
            suite.pg_proxy.pause()
            tally.counts["faults: database blackholed"] += 1
            await asyncio.sleep(STALL)
            suite.pg_proxy.resume()
            figures["database blackholed"] = await outcome(suite, cut_off)
    finally:
        tally.report(f"a worker stalled {STALL:.0f} s past a {LEASE:.0f} s lease", **figures)
    for name in ("worker paused", "database blackholed"):
        verdict = figures[name]
        assert isinstance(verdict, dict)
        assert verdict["state"] == "succeeded", (name, verdict)
        assert verdict["completed runs"] == 1, (name, verdict)
        assert verdict["overlapping runs"] == 0, (name, verdict)


async def run_one(
    suite: FaultSuite, stub: job_service_pb2_grpc.JobServiceStub, token: str, tally: Tally, tag: str
) -> str:
    """Create one job and return once its handler has started."""
    (name,) = await create_jobs(stub, token, tally, 1, payload=JOB, prefix=tag)

    async def started() -> bool:
        return bool(run_counts(suite.run_log).get(name))

    await eventually(started, what=f"the {tag} job to start", limit=60, every=0.1)
    return name


async def outcome(suite: FaultSuite, name: str) -> dict[str, object]:
    """The job's final state and what its handler runs did (from the run log)."""

    async def final() -> tuple[str, int] | None:
        state, attempts = (await job_rows(suite.direct_dsn, [name]))[name]
        return (state, attempts) if state in ("succeeded", "failed", "dead") else None

    state, attempts = await eventually(final, what="the job to end", limit=90)
    events = run_counts(suite.run_log)[name]
    running: set[int] = set()
    overlapping = 0
    for event, attempt in events:
        if event == "start":
            overlapping += bool(running)  # an earlier attempt neither done nor cancelled
            running.add(attempt)
        else:  # done or cancelled
            running.discard(attempt)
    return {
        "state": state,
        "attempts": attempts,
        "runs started": sum(1 for event, _ in events if event == "start"),
        "completed runs": sum(1 for event, _ in events if event == "done"),
        "cancelled runs": sum(1 for event, _ in events if event == "cancelled"),
        "overlapping runs": overlapping,
        "events": events,
    }
