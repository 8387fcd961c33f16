"""A worker process stalled longer than its lease (SIGSTOP, then SIGCONT) while it runs a job
longer than the lease: the server requeues the job and hands it to the same worker again
under a new lease while the stale attempt still runs there. The job must end SUCCEEDED,
never DEAD; the stale attempt's handler sees cancellation and completes nothing; the new
attempt starts only after the stale one ended; each attempt (each lease) completes at most
once. The handler writes what it does to a file, the side channel read here."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import pytest_asyncio
from mediagrid.jobs.v1 import job_pb2
from pydantic import SecretStr

from tests.jobs.jobs_support import Jobs, JobsFactory, declare, wait_until
from tests.support.proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
TYPE = "t.stall"
LEASE_SECONDS = 3.0
# Longer than one lease (the lease expires and the reaper requeues the job, which the
# worker's pending long-poll claims again) but shorter than two (the new lease is still
# held when the worker wakes up, so its heartbeats keep it).
PAUSE_SECONDS = 1.5 * LEASE_SECONDS
RUN_SECONDS = 2 * LEASE_SECONDS

WORKER_SCRIPT = """
import asyncio, sys, time
from common.settings import Settings
from services.jobs.worker.api import handler
from services.jobs.worker.main import run_worker

address, events, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])

def note(attempt, what):
    with open(events, "a") as out:
        out.write(f"{time.time():.3f} {attempt} {what}\\n")

@handler("t.stall", timeout_seconds=120)
async def stall(job):
    note(job.attempt, "start")
    try:
        for step in range(int(job.payload["seconds"] * 10)):
            await asyncio.sleep(0.1)
            if step % 10 == 0:
                await job.progress(step, "working")
    except asyncio.CancelledError:
        note(job.attempt, "cancelled")
        raise
    except BaseException as exc:
        note(job.attempt, type(exc).__name__)
        raise
    note(job.attempt, "completed")
    return {"attempt": job.attempt}

# A long-poll longer than the test: a claim is waiting on the server all through the pause.
settings = Settings(
    environment="test",
    job_lease_seconds=lease,
    worker_claim_wait_seconds=30,
    worker_handler_modules=[],
)
asyncio.run(run_worker(settings, types=["t.stall"], concurrency=4, address=address,
                       token="service-token"))
"""


def read_events(path: Path) -> list[tuple[float, int, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        at, attempt, what = line.split(" ", 2)
        rows.append((float(at), int(attempt), what))
    return rows


async def start_worker(svc: Jobs, events: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        svc.server.address,
        str(events),
        str(LEASE_SECONDS),
        env=env,
        cwd=ROOT,
    )


async def just_heartbeated(svc: Jobs, name: str) -> None:
    """Return right after the worker extended the job's lease (the pause then starts a whole
    lease before it expires, whatever the heartbeat's phase)."""
    first = (await svc.get(name)).lease_expire_time.ToNanoseconds()

    async def extended() -> bool:
        return (await svc.get(name)).lease_expire_time.ToNanoseconds() != first

    await wait_until(extended, 30)


@pytest.mark.faults
async def test_a_worker_stalled_longer_than_its_lease_finishes_its_job_once(
    jobs_service: JobsFactory, tmp_path: Path
) -> None:
    svc = await jobs_service(
        declare=declare(TYPE),
        job_lease_seconds=LEASE_SECONDS,
        job_reaper_interval_seconds=0.2,
    )
    events = tmp_path / "events"
    created = await svc.create(TYPE, payload={"seconds": RUN_SECONDS})  # 3 attempts
    worker = await start_worker(svc, events)
    try:

        async def first_started() -> bool:
            return any(what == "start" for _, _, what in read_events(events))

        await wait_until(first_started, 60)
        await just_heartbeated(svc, created.name)
        worker.send_signal(signal.SIGSTOP)
        await asyncio.sleep(PAUSE_SECONDS)
        during = await svc.get(created.name)  # claimed again while the worker was stopped
        worker.send_signal(signal.SIGCONT)

        async def finished() -> bool:
            job = await svc.get(created.name)
            return job.state not in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)

        await wait_until(finished, 60)
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 60)

    job = await svc.get(created.name)
    rows = read_events(events)
    runs = Counter(attempt for _, attempt, what in rows if what == "start")
    completions = Counter(attempt for _, attempt, what in rows if what == "completed")
    cancelled = sorted(attempt for _, attempt, what in rows if what == "cancelled")
    print(
        f"\noperations: 1 job, 1 pause of {PAUSE_SECONDS:.1f}s (lease {LEASE_SECONDS:.0f}s); "
        f"faults: 1 SIGSTOP; final state {job_pb2.JobState.Name(job.state)} after "
        f"{job.attempts} attempt(s) (attempt {during.attempts} held during the pause); "
        f"handler runs {dict(runs)}, completions {dict(completions)}, cancelled {cancelled}; "
        f"worker exit {code}"
    )
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job
    assert during.attempts == 2  # the stall really lost the first lease to a second claim
    assert dict(job.result) == {"attempt": job.attempts}
    assert all(n == 1 for n in runs.values())  # each lease ran the handler once
    assert completions == Counter({job.attempts: 1})  # only the last lease completed, once
    assert cancelled == list(range(1, job.attempts))  # every stale attempt saw cancellation
    # Never side by side: each attempt started after the previous one ended.
    ends = {attempt: at for at, attempt, what in rows if what != "start"}
    starts = {attempt: at for at, attempt, what in rows if what == "start"}
    for attempt in range(2, job.attempts + 1):
        assert starts[attempt] >= ends[attempt - 1]
    assert code == 0


OUTAGE_SECONDS = 2 * LEASE_SECONDS


@pytest_asyncio.fixture
async def pg_proxy(database_dsn: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test's PostgreSQL; set up before the suite, stopped after it."""
    async with TcpProxy.for_dsn(database_dsn) as proxy:
        yield proxy


@pytest.mark.faults
async def test_a_database_outage_longer_than_the_lease_runs_the_job_once_per_lease(
    pg_proxy: TcpProxy, database_dsn: str, jobs_service: JobsFactory, tmp_path: Path
) -> None:
    # The jobs service's PostgreSQL goes silent (every byte held by a proxy) for two leases
    # while the worker runs the job: heartbeats end on their deadlines and cancel nothing;
    # once the database answers again, either a heartbeat still extends the lease or the
    # reaper requeues the job and the worker, given it again, drops its stale attempt.
    # Either way the job ends SUCCEEDED, each lease completing at most once.
    database = urlsplit(database_dsn).path.lstrip("/")
    svc = await jobs_service(
        declare=declare(TYPE),
        database_url=SecretStr(pg_proxy.dsn(database)),
        job_lease_seconds=LEASE_SECONDS,
        job_reaper_interval_seconds=0.2,
    )
    events = tmp_path / "events"
    created = await svc.create(TYPE, payload={"seconds": RUN_SECONDS})
    worker = await start_worker(svc, events)
    try:

        async def first_started() -> bool:
            return any(what == "start" for _, _, what in read_events(events))

        await wait_until(first_started, 60)
        pg_proxy.pause()
        await asyncio.sleep(OUTAGE_SECONDS)
        pg_proxy.resume()

        async def finished() -> bool:
            # Right after the outage the database's breaker may still be open (the outage's
            # timeouts in a row opened it): UNAVAILABLE with RetryInfo, and a client retries.
            try:
                job = await svc.get(created.name)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
            return job.state not in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)

        await wait_until(finished, 90)
    finally:
        pg_proxy.resume()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 60)
    job = await svc.get(created.name)
    rows = read_events(events)
    runs = Counter(attempt for _, attempt, what in rows if what == "start")
    completions = Counter(attempt for _, attempt, what in rows if what == "completed")
    # A stale attempt is cancelled, or its progress report refused (LeaseLost, a cancellation).
    stopped = sorted(attempt for _, attempt, what in rows if what == "cancelled")
    print(
        f"\noperations: 1 job; faults: PostgreSQL silent {OUTAGE_SECONDS:.0f}s "
        f"(lease {LEASE_SECONDS:.0f}s); final state {job_pb2.JobState.Name(job.state)} after "
        f"{job.attempts} attempt(s); handler runs {dict(runs)}, completions "
        f"{dict(completions)}, stopped {stopped}; worker exit {code}"
    )
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job
    assert dict(job.result) == {"attempt": job.attempts}
    assert all(n == 1 for n in runs.values())
    assert completions == Counter({job.attempts: 1})
    assert stopped == list(range(1, job.attempts))
    assert code == 0
