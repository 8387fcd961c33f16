"""The worker runtime when a lease is lost under it: the job is claimed again under a new
lease while its stale attempt still runs or waits to be acknowledged (a real jobs service;
its lease is short, and the worker's heartbeats are held back to let the lease expire)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from mediagrid.jobs.v1 import job_pb2, worker_service_pb2_grpc

from services.jobs.worker.api import JobContext
from services.jobs.worker.runtime import LeaseLost
from tests.jobs.jobs_support import Jobs, JobsFactory, declare, make_runtime, wait_until

TYPE = "t.stale"
# The server's lease, and how often its reaper returns expired jobs to the queue.
LEASE = {"job_lease_seconds": 2.0, "job_reaper_interval_seconds": 0.2}


class SpyStub:
    """The real WorkerService stub, recording the leases each call quotes; ``refuse`` names
    methods answered UNAVAILABLE instead (the server looks away for a moment)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.sent: list[tuple[str, str]] = []  # (method, lease id) of each call that reached
        self.refused: list[tuple[str, str]] = []
        self.refuse: set[str] = set()
        self.claimed: list[str] = []  # lease ids handed out by ClaimJobs, in order

    def __getattr__(self, method: str) -> Callable[..., Any]:
        real = getattr(self._stub, method)

        async def call(request: Any, **kw: Any) -> Any:
            leases = [lease.lease_id for lease in _leases(request)]
            if method in self.refuse:
                self.refused += [(method, lease) for lease in leases]
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details="refused by the test",
                )
            self.sent += [(method, lease) for lease in leases]
            response = await real(request, **kw)
            if method == "ClaimJobs":
                self.claimed += [claimed.lease_id for claimed in response.jobs]
            return response

        return call


def _leases(request: Any) -> list[job_pb2.LeaseRef]:
    if hasattr(request, "completions"):
        return [c.lease for c in request.completions]
    if hasattr(request, "failures"):
        return [f.lease for f in request.failures]
    if hasattr(request, "leases"):
        return list(request.leases)
    if hasattr(request, "lease"):
        return [request.lease]
    return []


async def start(jobs_service: JobsFactory, **server: Any) -> Jobs:
    return await jobs_service(declare=declare(TYPE), **{**LEASE, **server})


def spied_runtime(svc: Jobs, handler: Any, *, heartbeats: bool) -> tuple[Any, SpyStub]:
    """A runtime on ``svc`` through a spy; without ``heartbeats`` it heartbeats only every
    20 minutes (it believes leases last an hour), so the server's 2 s leases expire."""
    lease = LEASE["job_lease_seconds"] if heartbeats else 3600.0
    settings = svc.ctx.settings.model_copy(update={"job_lease_seconds": lease})
    runtime = make_runtime(svc, {TYPE: handler}, settings=settings)
    spy = SpyStub(svc.channel)
    runtime.stub = spy
    return runtime, spy


async def test_a_job_claimed_again_cancels_its_stale_attempt_and_runs_once_more(
    jobs_service: JobsFactory,
) -> None:
    svc = await start(jobs_service)
    events: list[str] = []

    async def handler(job: JobContext) -> dict[str, Any]:
        events.append(f"{job.attempt}:start")
        if job.attempt > 1:
            events.append(f"{job.attempt}:end")
            return {"attempt": job.attempt}
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("1:cancelled")
            try:
                await job.progress(99, "a stale attempt reports")
            except LeaseLost:
                events.append("1:progress refused")
            await asyncio.sleep(0.3)  # winds down slowly; attempt 2 must wait for it
        # Swallowing the cancellation and returning: the runtime must not report this.
        events.append("1:end")
        return {"attempt": 1}

    created = await svc.create(TYPE, max_attempts=3)
    runtime, spy = spied_runtime(svc, handler, heartbeats=False)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def succeeded() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(succeeded)
    stop.set()
    await task
    job = await svc.get(created.name)
    print("events", events, "stats", runtime.stats, "calls", spy.sent)
    assert events == [
        "1:start",
        "1:cancelled",
        "1:progress refused",
        "1:end",
        "2:start",
        "2:end",
    ]
    assert (job.attempts, dict(job.result)) == (2, {"attempt": 2})
    completed = [lease for method, lease in spy.sent if method == "CompleteJobs"]
    reported = [m for m, _ in spy.sent if m in ("FailJobs", "ReportProgress")]
    assert len(completed) == 1 and reported == []  # only attempt 2, once
    s = runtime.stats
    assert (s.claimed, s.succeeded, s.failed, s.lost, s.released) == (2, 1, 0, 1, 0)
    assert runtime.in_flight == 0 and not runtime._attempts and not runtime._by_job


async def test_a_stale_outcome_waiting_for_its_acknowledgement_is_dropped(
    jobs_service: JobsFactory,
) -> None:
    # Attempt 1 finishes, but CompleteJobs is refused (UNAVAILABLE) until its lease has
    # expired and the job was claimed again: the runtime must stop retrying attempt 1's
    # outcome and send only attempt 2's.
    svc = await start(jobs_service)
    reclaimed = asyncio.Event()

    async def handler(job: JobContext) -> dict[str, Any]:
        if job.attempt > 1:
            reclaimed.set()
        return {"attempt": job.attempt}

    created = await svc.create(TYPE, max_attempts=3)
    runtime, spy = spied_runtime(svc, handler, heartbeats=False)
    spy.refuse.add("CompleteJobs")
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(reclaimed.wait(), 60)
    spy.refuse.clear()

    async def succeeded() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(succeeded)
    stop.set()
    await task
    job = await svc.get(created.name)
    first, second = spy.claimed
    print("refused", len(spy.refused), "sent", spy.sent, "stats", runtime.stats)
    assert {lease for _, lease in spy.refused} == {first}
    assert [lease for method, lease in spy.sent if method == "CompleteJobs"] == [second]
    assert (job.attempts, dict(job.result)) == (2, {"attempt": 2})
    assert (runtime.stats.succeeded, runtime.stats.lost) == (1, 1)


async def test_heartbeats_keep_the_lease_of_an_outcome_not_yet_acknowledged(
    jobs_service: JobsFactory,
) -> None:
    # CompleteJobs is refused for two lease lengths after the handler finished; the
    # heartbeats keep the lease meanwhile, so the outcome is accepted afterwards and the job
    # never runs again.
    svc = await start(jobs_service)
    runs: list[int] = []

    async def handler(job: JobContext) -> dict[str, Any]:
        runs.append(job.attempt)
        return {"attempt": job.attempt}

    created = await svc.create(TYPE, max_attempts=3)
    runtime, spy = spied_runtime(svc, handler, heartbeats=True)
    spy.refuse.add("CompleteJobs")
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))

    async def refused() -> bool:
        return len(spy.refused) > 0

    await wait_until(refused)
    await asyncio.sleep(2 * LEASE["job_lease_seconds"])
    spy.refuse.clear()

    async def succeeded() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(succeeded)
    stop.set()
    await task
    beats = [lease for method, lease in spy.sent if method == "Heartbeat"]
    print("runs", runs, "heartbeats", len(beats), "stats", runtime.stats)
    assert runs == [1] and len(spy.claimed) == 1
    assert (await svc.get(created.name)).attempts == 1
    assert len(beats) >= 3  # the lease was extended while its outcome waited
    assert (runtime.stats.succeeded, runtime.stats.lost) == (1, 0)
