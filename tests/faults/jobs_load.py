"""Client load for the job scenarios: create jobs, watch and poll them, count what was seen.

Every call carries a generous deadline (``CLIENT_DEADLINE``): a status other than OK or
UNAVAILABLE is then the server's doing, not the client's impatience.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from tests.faults.scenario import Tally, bearer, call, retrying
from tests.support.suite_process import direct_connect, run_counts

CLIENT_DEADLINE = 10.0
# A watch lasts until its job ends: longer than any job of a scenario waits in the queue.
WATCH_DEADLINE = 30.0
FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})


async def create_jobs(
    stub: job_service_pb2_grpc.JobServiceStub,
    token: str,
    tally: Tally,
    count: int,
    *,
    payload: dict[str, Any],
    prefix: str,
    concurrency: int = 8,
    names: list[str] | None = None,
) -> list[str]:
    """Create ``count`` jobs, retrying each with its request id until it is accepted.

    ``names`` (``count`` empty strings) is filled as jobs are created, so that observers
    can pick from the jobs created so far.
    """
    names = [""] * count if names is None else names
    todo: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        todo.put_nowait(n)

    async def creator() -> None:
        while not todo.empty():
            n = todo.get_nowait()
            spec = job_pb2.JobSpec(type="faults.record", request_id=f"{prefix}-{n}")
            spec.payload.update(payload)
            request = job_service_pb2.CreateJobRequest(job=spec)
            reply = await retrying(
                tally,
                "CreateJob",
                lambda request=request: stub.CreateJob(
                    request, metadata=bearer(token), timeout=CLIENT_DEADLINE
                ),
            )
            names[n] = reply.job.name

    await asyncio.gather(*(creator() for _ in range(concurrency)))
    return names


async def create_batches(
    stub: job_service_pb2_grpc.JobServiceStub,
    token: str,
    tally: Tally,
    names: list[str],
    *,
    per_batch: int,
    payload: dict[str, Any],
    prefix: str,
) -> None:
    """Fill ``names`` with jobs made by CreateBatch calls, each retried with its request id."""
    for first in range(0, len(names), per_batch):
        specs = []
        for _ in range(first, min(first + per_batch, len(names))):
            spec = job_pb2.JobSpec(type="faults.record")  # the batch's request id covers it
            spec.payload.update(payload)
            specs.append(spec)
        request = job_service_pb2.CreateBatchRequest(jobs=specs, request_id=f"{prefix}-b{first}")
        reply = await retrying(
            tally,
            "CreateBatch",
            lambda request=request: stub.CreateBatch(
                request, metadata=bearer(token), timeout=CLIENT_DEADLINE
            ),
        )
        names[first : first + len(reply.job_names)] = list(reply.job_names)


async def watch_until_final(
    stub: job_service_pb2_grpc.JobServiceStub, token: str, tally: Tally, name: str
) -> bool:
    """One WatchJob stream to the end; True when it ended on a final state."""
    final = False

    async def consume() -> bool:
        nonlocal final
        stream = stub.WatchJob(
            job_service_pb2.WatchJobRequest(name=name),
            metadata=bearer(token),
            timeout=WATCH_DEADLINE,
        )
        async for reply in stream:
            tally.counts["WatchJob messages"] += 1
            if reply.job.state in (
                job_pb2.JOB_STATE_SUCCEEDED,
                job_pb2.JOB_STATE_FAILED,
                job_pb2.JOB_STATE_DEAD,
                job_pb2.JOB_STATE_CANCELLED,
            ):
                final = True
        return True

    await call(tally, "WatchJob", consume)
    return final


async def observers(
    stub: job_service_pb2_grpc.JobServiceStub,
    token: str,
    tally: Tally,
    names: list[str],
    stop: asyncio.Event,
) -> None:
    """GetJob and WatchJob on random created jobs until ``stop``."""

    async def poller() -> None:
        while not stop.is_set():
            known = [n for n in names if n]
            if known:
                request = job_service_pb2.GetJobRequest(name=random.choice(known))
                await call(
                    tally,
                    "GetJob",
                    lambda request=request: stub.GetJob(
                        request, metadata=bearer(token), timeout=CLIENT_DEADLINE
                    ),
                )
            await asyncio.sleep(0.25)

    async def watcher() -> None:
        while not stop.is_set():
            known = [n for n in names if n]
            if known:
                await watch_until_final(stub, token, tally, random.choice(known))
            await asyncio.sleep(0.25)

    await asyncio.gather(poller(), poller(), watcher(), watcher())


async def job_rows(dsn: str, names: list[str]) -> dict[str, tuple[str, int]]:
    """state and attempts of every job in the database, by name (read without the proxy)."""
    conn = await direct_connect(dsn)
    try:
        rows = await conn.fetch("SELECT id::text AS id, state, attempts FROM jobs.jobs")
    finally:
        await conn.close()
    return {f"jobs/{row['id']}": (row["state"], row["attempts"]) for row in rows}


async def states(dsn: str) -> Counter[str]:
    conn = await direct_connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM jobs.jobs GROUP BY state")
    finally:
        await conn.close()
    return Counter({row["state"]: row["n"] for row in rows})


def run_verdict(run_log_path: Any, rows: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """Handler runs against the at-least-once rules.

    A job may run again only as a new attempt (its lease was lost and it was claimed again):
    two runs with one attempt number, or more runs than attempts, break the rules.
    """
    runs = run_counts(run_log_path)
    ran_twice = 0
    beyond_rules: list[str] = []
    never_ran: list[str] = []
    for name, (_state, attempts) in rows.items():
        events = runs.get(name, [])
        starts = [attempt for event, attempt in events if event == "start"]
        done = [attempt for event, attempt in events if event == "done"]
        if not done:
            never_ran.append(name)
        if len(done) > 1:
            ran_twice += 1
        if len(set(starts)) != len(starts) or len(starts) > attempts:
            beyond_rules.append(f"{name}: starts {starts}, attempts {attempts}")
    return {
        "handler runs": sum(1 for v in runs.values() for event, _ in v if event == "start"),
        "handler runs cancelled": sum(
            1 for v in runs.values() for event, _ in v if event == "cancelled"
        ),
        "ran twice (new attempt after a lost lease)": ran_twice,
        "beyond at-least-once": beyond_rules,
        "never completed a run": never_ran,
    }


async def wait_all_final(dsn: str, expected: int, limit: float) -> Counter[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        seen = await states(dsn)
        if sum(n for s, n in seen.items() if s in FINAL) >= expected or loop.time() > deadline:
            return seen
        await asyncio.sleep(0.5)
