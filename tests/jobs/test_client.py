"""services/jobs/client.py: the client other services use, forwarding the user's token."""

from __future__ import annotations

import asyncio

from mediagrid.jobs.v1 import job_pb2, worker_service_pb2

from services.jobs.client import JobsClient
from tests.jobs.jobs_support import OWNER, Jobs, lease_of


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
