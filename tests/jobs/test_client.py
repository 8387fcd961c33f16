"""services/jobs/client.py: the client other services use, forwarding the user's token."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from services.jobs.client import JobsClient
from tests.jobs.jobs_support import OWNER, Jobs, lease_of, wait_until


async def test_client_creates_gets_and_watches_on_behalf_of_the_user(svc: Jobs) -> None:
    client = JobsClient(svc.channel, svc.owner)
    job = await client.create_job(
        "test.noop",
        {"file": "files/abc"},
        files=["files/abc"],
        request_id="probe-abc",
        priority=3,
    )
    assert job.owner == OWNER and list(job.files) == ["files/abc"]
    again = await client.create_job(
        "test.noop",
        {"file": "files/abc"},
        files=["files/abc"],
        request_id="probe-abc",
        priority=3,
    )
    assert again.name == job.name
    assert (await client.get_job(job.name)).priority == 3
    states: list[int] = []

    async def watch() -> None:
        async for update in client.watch_job(job.name):
            states.append(update.state)

    watcher = asyncio.create_task(watch())
    [claimed] = await svc.claim(("test.noop",))
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
    )
    await asyncio.wait_for(watcher, 30)
    assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
    counts = await JobsClient(svc.channel, svc.service).get_job_counts(OWNER)
    assert counts["JOB_STATE_SUCCEEDED"] == 1
    deleted = await JobsClient(svc.channel, svc.admin).delete_user_jobs(OWNER)
    assert deleted.deleted_count == 1


async def test_client_watch_reopens_an_idle_stream_without_repeating_itself(
    svc: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``watch_idle`` without a message the watch re-opens its stream; the server's first
    message (the unchanged job) is not yielded again."""
    caplog.set_level(logging.INFO, logger="mediagrid.jobs.client")
    client = JobsClient(svc.channel, svc.owner, watch_idle=0.2)
    job = await client.create_job("test.noop")
    seen: list[int] = []

    async def watch() -> None:
        async for update in client.watch_job(job.name):
            seen.append(update.state)

    async def reopened_thrice() -> bool:
        return sum("went silent" in r.getMessage() for r in caplog.records) >= 3

    watcher = asyncio.create_task(watch())
    await wait_until(reopened_thrice)
    [claimed] = await svc.claim(("test.noop",))
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
    )
    await asyncio.wait_for(watcher, 30)
    assert seen[0] == job_pb2.JOB_STATE_QUEUED and seen[-1] == job_pb2.JOB_STATE_SUCCEEDED
    assert len(seen) == len(set(seen))  # QUEUED once, however often the stream was re-opened


async def test_client_watches_a_batch_until_done(svc: Jobs) -> None:
    created = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")] * 2),
        metadata=svc.owner,
    )
    client = JobsClient(svc.channel, svc.owner)
    updates: list[job_pb2.Batch] = []

    async def watch() -> None:
        async for batch in client.watch_batch(created.batch.name):
            updates.append(batch)

    watcher = asyncio.create_task(watch())
    for claimed in await svc.claim(("test.noop",)):
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
        )
    await asyncio.wait_for(watcher, 30)
    assert not updates[0].done and updates[-1].done
    assert updates[-1].state_counts["JOB_STATE_SUCCEEDED"] == 2
