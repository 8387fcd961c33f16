"""An idle worker keeps one ClaimJobs long poll in flight, not one per claim loop."""

from __future__ import annotations

import asyncio
from typing import Any

from services.jobs.worker.api import JobContext
from tests.jobs.jobs_support import make_runtime, wait_until


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
