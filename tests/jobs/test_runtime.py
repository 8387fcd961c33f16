"""The worker runtime end to end against a real jobs service over gRPC."""

from __future__ import annotations

import asyncio
from typing import Any

from mediagrid.jobs.v1 import job_pb2, job_service_pb2

from services.jobs.worker.api import HandlerSpec, JobContext, PermanentJobError, RetryableJobError
from tests.jobs.jobs_support import OWNER, Jobs, make_runtime, wait_until


async def counts(svc: Jobs) -> dict[str, int]:
    return {state.value: n for state, n in (await svc.repo.counts_by_owner(OWNER)).items()}


async def test_success_progress_and_result(svc: Jobs) -> None:
    async def work(job: JobContext) -> dict[str, Any]:
        await job.progress(50, "half")
        return {"doubled": job.payload["n"] * 2, "attempt": job.attempt, "owner": job.owner}

    created = await svc.create("t.work", payload={"n": 21})
    runtime = make_runtime(svc, {"t.work": work})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    watched = []
    async for response in svc.jobs.WatchJob(
        job_service_pb2.WatchJobRequest(name=created.name), metadata=svc.owner
    ):
        watched.append(response.job)
    stop.set()
    await task
    final = watched[-1]
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    assert dict(final.result) == {"doubled": 42, "attempt": 1, "owner": OWNER}
    assert watched[0].state in (
        job_pb2.JOB_STATE_QUEUED,
        job_pb2.JOB_STATE_RUNNING,
        job_pb2.JOB_STATE_SUCCEEDED,
    )
    assert runtime.stats.succeeded == 1


async def test_retryable_failures_back_off_then_succeed(svc: Jobs) -> None:
    seen: list[int] = []

    async def flaky(job: JobContext) -> dict[str, Any]:
        seen.append(job.attempt)
        if job.attempt < 3:
            raise RetryableJobError("not yet")
        return {"ok": True}

    created = await svc.create("t.flaky", max_attempts=5)
    runtime = make_runtime(svc, {"t.flaky": flaky})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def done() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(done)
    stop.set()
    await task
    assert seen == [1, 2, 3]
    job = await svc.get(created.name)
    assert job.attempts == 3 and job.error == "RetryableJobError: not yet"


async def test_permanent_failure_and_exhausted_retries(svc: Jobs) -> None:
    async def broken(job: JobContext) -> None:
        raise PermanentJobError("corrupt input")

    async def always_failing(job: JobContext) -> None:
        raise RuntimeError("still broken")

    permanent = await svc.create("t.broken", max_attempts=5)
    exhausted = await svc.create("t.always", max_attempts=2)
    runtime = make_runtime(svc, {"t.broken": broken, "t.always": always_failing})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def finished() -> bool:
        states = {(await svc.get(n)).state for n in (permanent.name, exhausted.name)}
        return states == {job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_DEAD}

    await wait_until(finished)
    stop.set()
    await task
    assert (await svc.get(permanent.name)).state == job_pb2.JOB_STATE_FAILED
    assert (await svc.get(permanent.name)).attempts == 1
    dead = await svc.get(exhausted.name)
    assert (dead.state, dead.attempts, dead.error) == (
        job_pb2.JOB_STATE_DEAD,
        2,
        "RuntimeError: still broken",
    )


async def test_graceful_stop_finishes_running_and_releases_waiting(svc: Jobs) -> None:
    started = asyncio.Event()

    async def slow(job: JobContext) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(0.3)
        return {"finished": True}

    for _ in range(4):
        await svc.create("t.slow")
    # One handler at a time, three more prefetched: stop must finish one and release three.
    runtime = make_runtime(svc, {"t.slow": slow}, concurrency=1, prefetch=3)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await started.wait()
    stop.set()
    await task
    assert await counts(svc) == {"succeeded": 1, "queued": 3}
    assert runtime.stats.released == 3


async def test_stop_after_grace_releases_handlers_still_running(jobs_service: Any) -> None:
    svc = await jobs_service(worker_shutdown_grace_seconds=0.1)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(job: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    created = await svc.create("t.stuck", max_attempts=1)
    runtime = make_runtime(svc, {"t.stuck": stuck})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await started.wait()
    stop.set()
    await task
    assert cancelled.is_set()
    job = await svc.get(created.name)
    assert (job.state, job.attempts) == (job_pb2.JOB_STATE_QUEUED, 0)


async def test_timeout_counts_as_a_retryable_failure(svc: Jobs) -> None:
    async def hangs(job: JobContext) -> None:
        await asyncio.sleep(3600)

    created = await svc.create("t.hangs", max_attempts=1)
    spec = HandlerSpec("t.hangs", hangs, 0.05, None, 0.01, 0.02)
    runtime = make_runtime(svc, {"t.hangs": spec})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def dead() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_DEAD

    await wait_until(dead)
    stop.set()
    await task
    assert "timed out" in (await svc.get(created.name)).error


async def test_cancelled_job_stops_its_handler_via_heartbeat(svc: Jobs) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long(job: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    created = await svc.create("t.long")
    runtime = make_runtime(svc, {"t.long": long})
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await started.wait()
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=created.name), metadata=svc.owner
    )
    await runtime.heartbeat_once()
    await asyncio.wait_for(cancelled.wait(), 30)
    stop.set()
    await task
    assert (await svc.get(created.name)).state == job_pb2.JOB_STATE_CANCELLED
    assert runtime.stats.lost == 1


async def test_parallel_claims_and_acks_never_hold_more_than_the_capacity(
    jobs_service: Any,
) -> None:
    # Three ClaimJobs and three acknowledgement calls in flight: the claims share the
    # capacity (concurrency + prefetch = 4), so the worker never holds more than 4 jobs.
    # (The database may show more RUNNING: finished jobs wait there for their batched
    # acknowledgement.)
    svc = await jobs_service(worker_claims_in_flight=3, worker_acks_in_flight=3)
    peak = 0

    async def work(job: JobContext) -> None:
        nonlocal peak
        peak = max(peak, runtime.in_flight)
        await asyncio.sleep(0.01)

    for _ in range(30):
        await svc.create("t.parallel")
    runtime = make_runtime(svc, {"t.parallel": work}, concurrency=2, prefetch=2)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def all_acknowledged() -> bool:
        return runtime.stats.succeeded == 30

    await wait_until(all_acknowledged)
    stop.set()
    await task
    assert 2 <= peak <= 4
    assert await counts(svc) == {"succeeded": 30}
    assert (runtime.stats.claimed, runtime.stats.lost) == (30, 0)
