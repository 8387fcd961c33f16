"""The worker runtime against a jobs service that stops answering (a TCP proxy between them
blackholes every byte): every call has a deadline, DEADLINE_EXCEEDED is retried, failing
heartbeats cancel nothing, and a stop never hangs on the silent server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from mediagrid.jobs.v1 import job_pb2, worker_service_pb2_grpc

from services.jobs.worker.api import JobContext
from tests.jobs.jobs_support import Jobs, JobsFactory, declare, make_runtime, wait_until
from tests.support.proxy import TcpProxy

TYPE = "t.blackhole"
CALL_TIMEOUT = 0.5


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy()
    try:
        yield proxy
    finally:
        proxy.resume()
        await proxy.stop()


async def through(proxy: TcpProxy, svc: Jobs, handler: Any, **settings: Any) -> Any:
    """A runtime whose calls to ``svc`` go through ``proxy``, with short call deadlines."""
    proxy.target_port = svc.server.port
    await proxy.start()
    settings = svc.ctx.settings.model_copy(
        update={
            "worker_call_timeout_seconds": CALL_TIMEOUT,
            "worker_claim_wait_seconds": 0.5,
            **settings,
        }
    )
    runtime = make_runtime(svc, {TYPE: handler}, settings=settings, concurrency=1, prefetch=1)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}")
    runtime.stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    return runtime


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_silent_server_fails_calls_but_cancels_no_handler(
    jobs_service: JobsFactory, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # The server goes silent for one heartbeat while the handler runs: the heartbeat and the
    # pending claim end on their deadlines, the handler carries on, and once the server
    # answers again the lease (never expired) is extended and the outcome accepted.
    lease = 6.0
    svc = await jobs_service(
        declare=declare(TYPE), job_lease_seconds=lease, job_reaper_interval_seconds=0.2
    )
    events: list[str] = []
    release = asyncio.Event()

    async def handler(job: JobContext) -> dict[str, Any]:
        events.append(f"{job.attempt}:start")
        try:
            while not release.is_set():
                await job.progress(50, "waiting")  # times out during the outage: not fatal
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            events.append(f"{job.attempt}:cancelled")
            raise
        events.append(f"{job.attempt}:completed")
        return {"attempt": job.attempt}

    caplog.set_level(logging.WARNING, logger="mediagrid.worker")
    created = await svc.create(TYPE)
    runtime = await through(proxy, svc, handler, job_lease_seconds=lease)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await wait_until(lambda: _true(bool(events)), 60)
    proxy.pause()

    async def heartbeat_failed() -> bool:
        return bool(warnings(caplog, "heartbeat of 1 lease(s) failed"))

    await wait_until(heartbeat_failed, 30)
    proxy.resume()
    await asyncio.sleep(lease / 3 + CALL_TIMEOUT)  # the next heartbeat gets through
    release.set()

    async def succeeded() -> bool:
        return (await svc.get(created.name)).state == job_pb2.JOB_STATE_SUCCEEDED

    await wait_until(succeeded, 30)
    stop.set()
    await asyncio.wait_for(task, 30)
    job = await svc.get(created.name)
    failed = warnings(caplog, "DEADLINE_EXCEEDED")
    print(f"\nevents {events}, stats {runtime.stats}, calls past their deadline {len(failed)}")
    for message in sorted(set(failed)):
        print(message)
    assert events == ["1:start", "1:completed"]
    assert (job.attempts, dict(job.result)) == (1, {"attempt": 1})
    assert any(m.startswith("heartbeat") for m in failed)
    assert (runtime.stats.succeeded, runtime.stats.lost) == (1, 0)


async def _true(value: bool) -> bool:
    return value


async def test_stopping_while_the_server_is_silent_ends_within_the_deadlines(
    jobs_service: JobsFactory, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # The server goes silent as one job finishes (the next one starts), then the worker is
    # stopped: the acknowledgement and the release of the job it cancels after the grace
    # period end on their deadlines, the stop returns,
    # and the leases are left to expire (the reaper puts both jobs back in the queue).
    svc = await jobs_service(
        declare=declare(TYPE), job_lease_seconds=2.0, job_reaper_interval_seconds=0.2
    )
    started = asyncio.Event()
    finish = asyncio.Event()

    async def handler(job: JobContext) -> None:
        if job.name == first.name:
            started.set()
            await finish.wait()
        else:
            await asyncio.sleep(3600)  # still running at the stop: cancelled, then released

    first = await svc.create(TYPE)
    second = await svc.create(TYPE)
    runtime = await through(
        proxy, svc, handler, job_lease_seconds=2.0, worker_shutdown_grace_seconds=0.5
    )
    caplog.set_level(logging.WARNING, logger="mediagrid.worker")
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(started.wait(), 60)

    async def both_claimed() -> bool:
        states = {(await svc.get(n)).state for n in (first.name, second.name)}
        return states == {job_pb2.JOB_STATE_RUNNING}

    await wait_until(both_claimed, 30)
    proxy.pause()
    finish.set()
    await asyncio.sleep(0.2)  # the outcome is queued and its CompleteJobs call hangs
    stop.set()
    await asyncio.wait_for(task, 20)  # never waits for the silent server
    not_released = warnings(caplog, "could not release")
    not_recorded = warnings(caplog, "not recorded")
    proxy.resume()

    async def requeued() -> bool:
        jobs = [await svc.get(n) for n in (first.name, second.name)]
        return all(j.state == job_pb2.JOB_STATE_QUEUED for j in jobs)

    await wait_until(requeued, 30)
    print(f"\nstats {runtime.stats}; {not_released}; {not_recorded}")
    assert not_released and "DEADLINE_EXCEEDED" in not_released[0]
    assert not_recorded and "DEADLINE_EXCEEDED" in not_recorded[0]
    assert (runtime.stats.succeeded, runtime.stats.released) == (0, 0)
