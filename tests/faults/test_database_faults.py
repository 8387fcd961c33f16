"""PostgreSQL failing under a running suite (subprocess servers and workers, PostgreSQL behind
a TCP proxy): its connections killed every 2 s, then blackholed for 20 s.

Each scenario prints its counts; `make test-faults` runs them (``-s`` shows the prints).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from mediagrid.users.v1 import user_service_pb2 as users_pb2
from mediagrid.users.v1 import user_service_pb2_grpc as users_pb2_grpc

from tests.faults.conftest import FaultSuiteFactory
from tests.faults.jobs_load import (
    CLIENT_DEADLINE,
    create_batches,
    create_jobs,
    job_rows,
    observers,
    run_verdict,
    states,
    wait_all_final,
)
from tests.faults.scenario import Tally, bearer, call, eventually
from tests.support.suite_process import health_status

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

JOBS = 2000
SINGLE = 200  # of which created by CreateJob, one call each
PAYLOAD = {"seconds": 0.1}  # 2,000 x 0.1 s over 32 slots: rounds of faults land during the run
# Short leases and a fast reaper: a job whose worker lost its lease comes back in seconds.
QUEUE_SETTINGS = {
    "job_lease_seconds": 5,
    "job_reaper_interval_seconds": 1,
    "job_owner_max_running": 0,
    "worker_claim_wait_seconds": 1,
    "job_retry_base_seconds": 0.2,
    "job_retry_max_seconds": 1,
    "job_max_attempts_default": 10,
}


async def test_terminating_the_suites_backends_every_2s_loses_no_job(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(**QUEUE_SETTINGS)
    server = await suite.serve("all")
    worker_token = await suite.service_token()
    _, token = await suite.user_token("alice@example.com")
    for n in range(2):
        await suite.worker(
            server, ["faults.record"], worker_token, name=f"worker{n}", concurrency=16
        )
    tally = Tally()
    stop = asyncio.Event()

    async def killer() -> None:
        while not stop.is_set():
            await asyncio.sleep(2)
            tally.counts["pg_terminate_backend rounds"] += 1
            tally.counts["connections terminated"] += await suite.terminate_backends()

    names: list[str] = [""] * (JOBS - SINGLE)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        faults = asyncio.create_task(killer())
        watching = asyncio.create_task(observers(stub, token, tally, names, stop))
        try:
            started = time.monotonic()
            # Most jobs in batches (the server's time goes to running them, under faults),
            # the rest one CreateJob call each, both at once; observers see both.
            single = [""] * SINGLE
            await asyncio.gather(
                create_batches(
                    stub, token, tally, names, per_batch=100, payload=PAYLOAD, prefix="b"
                ),
                create_jobs(stub, token, tally, SINGLE, payload=PAYLOAD, prefix="t", names=single),
            )
            names.extend(single)
            tally.counts["seconds creating"] = round(time.monotonic() - started)
            seen = await wait_all_final(suite.direct_dsn, JOBS, limit=150)
            tally.counts["seconds until all final"] = round(time.monotonic() - started)
        finally:
            stop.set()
            await asyncio.gather(faults, watching, return_exceptions=True)
    rows = await job_rows(suite.direct_dsn, names)
    verdict = run_verdict(suite.run_log, rows)
    lost = [name for name in names if rows.get(name, ("missing",))[0] != "succeeded"]
    tally.report(
        "pg_terminate_backend every 2 s during 2,000 jobs",
        operations=sum(tally.statuses.values()),
        jobs_created=len(set(names)),
        jobs_in_database=len(rows),
        final_states=dict(seen),
        lost=len(lost),
        **{k: (len(v) if isinstance(v, list) else v) for k, v in verdict.items()},
    )
    assert tally.counts["pg_terminate_backend rounds"] >= 3
    assert tally.counts["connections terminated"] > 0
    assert len(set(names)) == JOBS and len(rows) == JOBS  # no job created twice by a retry
    assert lost == [], lost[:10]
    assert dict(seen) == {"succeeded": JOBS}
    assert verdict["never completed a run"] == []
    assert verdict["beyond at-least-once"] == []
    assert tally.never_seen() == {}, tally.samples


# The server answers for the database within this (db_call_timeout_seconds, and the same
# for the in-process authentication call); the client allows far more.
DB_BOUND = 3.0
BLACKHOLE = 20.0


async def test_blackholed_database_answers_unavailable_within_the_bound_then_recovers(
    fault_suite: FaultSuiteFactory,
) -> None:
    suite = await fault_suite(
        **QUEUE_SETTINGS,
        db_call_timeout_seconds=DB_BOUND,
        peer_call_timeout_seconds=DB_BOUND,
        db_connect_timeout_seconds=2,
        db_connect_attempts=2,
        db_connect_backoff_seconds=0.1,
        health_failures_before_not_serving=1,
    )
    server = await suite.serve("all")
    worker_token = await suite.service_token()
    user, token = await suite.user_token("bob@example.com")
    await suite.worker(server, ["faults.record"], worker_token, concurrency=4)
    tally = Tally()
    async with grpc.aio.insecure_channel(server.address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        users = users_pb2_grpc.UserServiceStub(channel)
        before = await create_jobs(jobs, token, tally, 5, payload={"seconds": 0}, prefix="before")
        assert await wait_all_final(suite.direct_dsn, 5, limit=60) == {"succeeded": 5}
        # A stream open when the outage starts.
        watched = await create_jobs(
            jobs, token, tally, 1, payload={"seconds": 24, "steps": 24}, prefix="watched"
        )

        watch = asyncio.create_task(_watch_through(jobs, token, tally, watched[0]))
        await asyncio.sleep(1)

        def rpcs(n: int) -> dict[str, object]:
            spec = job_pb2.JobSpec(type="faults.record", request_id=f"during-{n}")
            return {
                "GetJob": lambda: jobs.GetJob(
                    job_service_pb2.GetJobRequest(name=before[0]),
                    metadata=bearer(token),
                    timeout=CLIENT_DEADLINE,
                ),
                "CreateJob": lambda: jobs.CreateJob(
                    job_service_pb2.CreateJobRequest(job=spec),
                    metadata=bearer(token),
                    timeout=CLIENT_DEADLINE,
                ),
                "GetUser": lambda: users.GetUser(
                    users_pb2.GetUserRequest(name=user),
                    metadata=bearer(token),
                    timeout=CLIENT_DEADLINE,
                ),
            }

        suite.pg_proxy.pause()
        started = time.monotonic()
        health_seen: set[str] = set()

        def in_outage() -> bool:
            # A call starts only while a whole client deadline still fits in the outage.
            return time.monotonic() - started < BLACKHOLE - CLIENT_DEADLINE

        async def keep_calling(rpc: str) -> None:
            n = 0
            while in_outage():
                n += 1
                await call(tally, rpc, rpcs(n)[rpc])  # type: ignore[arg-type]

        async def keep_checking_health() -> None:
            while in_outage():
                health_seen.add(await health_status(server.address, deadline=2))
                await asyncio.sleep(0.5)

        await asyncio.gather(
            *(keep_calling(rpc) for rpc in ("GetJob", "CreateJob", "GetUser")),
            keep_checking_health(),
        )
        await asyncio.sleep(max(0.0, BLACKHOLE - (time.monotonic() - started)))
        suite.pg_proxy.resume()
        outage = time.monotonic() - started
        tally.counts["blackhole seconds"] = int(outage)

        # Recovery without a restart: new jobs run, health is SERVING again.
        after = await create_jobs(jobs, token, tally, 5, payload={"seconds": 0}, prefix="after")
        rows_after = await eventually(
            lambda: _all_succeeded(suite.direct_dsn, after), what="jobs created after the outage"
        )
        await eventually(lambda: _is_serving(server.address), what="health SERVING again", limit=60)
        final = await states(suite.direct_dsn)
        watch_outcome = await asyncio.wait_for(watch, 120)
    codes_during = {
        code for (rpc, code) in tally.statuses if rpc in ("GetJob", "CreateJob", "GetUser")
    }
    tally.report(
        "PostgreSQL blackholed 20 s",
        operations=sum(tally.statuses.values()),
        faults="1 blackhole",
        health_seen_during=sorted(health_seen),
        final_states=dict(final),
        recovered_jobs=len(rows_after),
        watch_opened_before_the_outage=watch_outcome,
        server_alive=server.returncode is None,
    )
    assert server.returncode is None  # recovered without a restart
    during = {
        (rpc, code): count
        for (rpc, code), count in tally.statuses.items()
        if rpc in ("GetJob", "CreateJob", "GetUser") and code != "OK"
    }
    # Every DB-backed RPC answered UNAVAILABLE, never DEADLINE_EXCEEDED from a server-side
    # wait (the client allowed twice the server's bound) nor INTERNAL/UNKNOWN.
    assert codes_during <= {"OK", "UNAVAILABLE"}, tally.samples
    assert during, "no RPC failed while the database was blackholed"
    for rpc in ("GetJob", "CreateJob", "GetUser"):
        assert tally.slowest_failure.get(rpc, 0.0) <= DB_BOUND + 2.0, (rpc, tally.slowest_failure)
    assert "NOT_SERVING" in health_seen
    # The watch open across the outage either continued to the job's end or ended with a
    # status a client retries on.
    assert watch_outcome in ("continued to SUCCEEDED", "UNAVAILABLE"), watch_outcome
    assert "SERVING" in {await health_status(server.address)}


async def _watch_through(
    stub: job_service_pb2_grpc.JobServiceStub, token: str, tally: Tally, name: str
) -> str:
    last = "none"
    stream = stub.WatchJob(
        job_service_pb2.WatchJobRequest(name=name), metadata=bearer(token), timeout=120
    )
    try:
        async for reply in stream:
            last = job_pb2.JobState.Name(reply.job.state)
    except grpc.aio.AioRpcError as exc:
        tally.failed("WatchJob (across the outage)", exc, 0.0)
        return str(exc.code().name)
    return f"continued to {last.removeprefix('JOB_STATE_')}"


async def _is_serving(address: str) -> bool:
    return await health_status(address) == "SERVING"


async def _all_succeeded(dsn: str, names: list[str]) -> dict[str, tuple[str, int]] | None:
    rows = await job_rows(dsn, names)
    mine = {name: rows[name] for name in names if name in rows}
    done = len(mine) == len(names) and all(state == "succeeded" for state, _ in mine.values())
    return mine if done else None
