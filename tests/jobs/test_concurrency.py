"""Many workers on one queue: exactly once without deaths, at least once when workers die."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mediagrid.jobs.v1 import job_pb2, job_service_pb2

from services.jobs.worker.api import JobContext
from tests.jobs.jobs_support import OWNER, Jobs, JobsFactory, make_runtime, wait_until

ROOT = Path(__file__).resolve().parents[2]


async def create_many(
    svc: Jobs, job_type: str, n: int, payload: dict[str, Any] | None = None
) -> list[str]:
    specs = [job_pb2.JobSpec(type=job_type) for _ in range(n)]
    for spec in specs:
        if payload:
            spec.payload.update(payload)
    response = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(display_name="many", jobs=specs), metadata=svc.owner
    )
    return list(response.job_names)


async def test_every_job_runs_exactly_once_across_workers(svc: Jobs) -> None:
    runs: Counter[str] = Counter()

    async def record(job: JobContext) -> None:
        runs[job.name] += 1
        await asyncio.sleep(0)

    names = await create_many(svc, "t.count", 600)
    runtimes = [
        make_runtime(svc, {"t.count": record}, concurrency=8, prefetch=8, worker_id=f"w{i}")
        for i in range(4)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runtimes]

    async def drained() -> bool:
        counts = await svc.repo.counts_by_owner(OWNER)
        return counts.get("succeeded", 0) == len(names)  # type: ignore[call-overload]

    await wait_until(drained)
    stop.set()
    await asyncio.gather(*tasks)
    assert set(runs) == set(names)
    assert max(runs.values()) == 1
    assert sum(r.stats.claimed for r in runtimes) == len(names)
    assert all(r.stats.claimed > 0 for r in runtimes)  # the work was actually shared


WORKER_SCRIPT = """
import asyncio, sys
from common.settings import Settings
from services.jobs.worker.main import run_worker
settings = Settings(
    environment="test",
    job_lease_seconds=1.0,
    worker_handler_modules=["services.jobs.builtin_handlers"],
)
stats = run_worker(
    settings, types=["sleep"], concurrency=50, address=sys.argv[1], token="service-token"
)
asyncio.run(stats)
"""


async def test_killed_workers_jobs_run_again_at_least_once(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(
        job_lease_seconds=1.0,
        job_reaper_interval_seconds=0.2,
        job_owner_max_running=0,  # all twenty of the user's jobs run at once
    )
    names = await create_many(svc, "sleep", 20, {"seconds": 3600})
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER_SCRIPT, svc.server.address, env=env, cwd=ROOT
    )
    try:

        async def all_running() -> bool:
            counts = await svc.repo.counts_by_owner(OWNER)
            return counts.get("running", 0) == len(names)  # type: ignore[call-overload]

        await wait_until(all_running, 120)
    finally:
        process.send_signal(signal.SIGKILL)  # no graceful stop: the leases are left to expire
        await process.wait()

    runs: Counter[str] = Counter()

    async def quick(job: JobContext) -> dict[str, Any]:
        runs[job.name] += 1
        return {"attempt": job.attempt}

    runtime = make_runtime(svc, {"sleep": quick}, concurrency=10, settings=svc.ctx.settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def drained() -> bool:
        counts = await svc.repo.counts_by_owner(OWNER)
        return counts.get("succeeded", 0) == len(names)  # type: ignore[call-overload]

    await wait_until(drained, 120)
    stop.set()
    await task
    assert set(runs) == set(names)
    for name in names:
        job = await svc.get(name)
        assert job.attempts == 2  # the killed attempt counted, the second one succeeded
        assert dict(job.result) == {"attempt": 2}
