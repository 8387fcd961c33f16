"""An idle worker keeps one ClaimJobs long poll in flight, not one per claim loop; a new job
wakes the idle claims of the process that created it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2

from services.jobs import worker_servicer
from services.jobs.notifier import Notifier
from services.jobs.worker.api import JobContext
from tests.jobs.jobs_support import JobsFactory, make_runtime, wait_until

STEP_SECONDS = 60.0  # guards against a hung test only


async def test_an_idle_worker_polls_once_at_a_time_after_work(jobs_service: Any) -> None:
    svc = await jobs_service(worker_claims_in_flight=2, worker_claim_wait_seconds=0.2)

    async def work(job: JobContext) -> None:
        await asyncio.sleep(0.01)

    for _ in range(12):
        await svc.create("t.parallel")
    runtime = make_runtime(svc, {"t.parallel": work}, concurrency=8)
    calls = {"in_flight": 0, "peak": 0, "done": 0}
    claim = runtime.stub.ClaimJobs

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        calls["in_flight"] += 1
        calls["peak"] = max(calls["peak"], calls["in_flight"])
        try:
            return await claim(*args, **kwargs)
        finally:
            calls["in_flight"] -= 1
            calls["done"] += 1

    runtime.stub.ClaimJobs = counted_claim
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    def calls_done(n: int) -> Any:
        target = calls["done"] + n

        async def reached() -> bool:
            return calls["done"] >= target

        return reached

    async def all_acknowledged() -> bool:
        return runtime.stats.succeeded == 12

    await wait_until(all_acknowledged)
    # Let the polls that were out while jobs came back (empty) return, then watch idling.
    await wait_until(calls_done(2))
    calls["peak"] = calls["in_flight"]
    await wait_until(calls_done(4))
    stop.set()
    await task
    assert calls["peak"] == 1


def notifier_of(server: Any) -> Notifier:
    notifier = server.services[0].background[0].__self__
    assert isinstance(notifier, Notifier)
    return notifier


@pytest.mark.parametrize("rpc", ["CreateJob", "CreateBatch"])
async def test_a_new_job_wakes_the_waiting_claims_of_its_process_without_listen(
    jobs_service: JobsFactory, monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    """A job's NOTIFY reaches waiting claims through PostgreSQL and the LISTEN connection; the
    process that created the job wakes its own claims itself, so they take it even while that
    connection is down: no notification arrives, and the claim would otherwise re-check only
    when its ten-minute wait ends (the step bound is a guard against that, not a timing)."""
    svc = await jobs_service(job_claim_max_wait_seconds=600)
    monkeypatch.setattr(worker_servicer, "DISCONNECTED_POLL_SECONDS", 3600.0)
    notifier = notifier_of(svc.server)

    async def refused() -> None:
        raise ConnectionRefusedError("the test keeps the LISTEN connection down")

    monkeypatch.setattr(notifier, "_connect", refused)
    notifier._drop()
    assert not notifier.connected.is_set()
    claim = asyncio.create_task(svc.claim(("test.noop",), wait=600))

    async def waiting() -> bool:
        return notifier.waiter_count == 1

    await wait_until(waiting)
    if rpc == "CreateJob":
        names = [(await svc.create("test.noop")).name]
    else:
        batch = await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")]),
            metadata=svc.owner,
        )
        names = list(batch.job_names)
    async with asyncio.timeout(STEP_SECONDS):
        claimed = await claim
    assert [c.job.name for c in claimed] == names
    assert not notifier.connected.is_set()
