"""ListJobs, GetQueueStats, retention/PurgeJobs, GetJobCounts, DeleteUserJobs, WatchJob."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from common.grpc_errors import error_info
from services.jobs.retention import purge
from services.jobs.states import JobState
from tests.jobs.jobs_support import OTHER, OWNER, Jobs, lease_of, wait_until


async def test_list_pages_through_own_jobs_newest_first(svc: Jobs) -> None:
    mine = [(await svc.create()).name for _ in range(5)]
    await svc.create(md=svc.other)
    names: list[str] = []
    token = ""
    while True:
        response = await svc.jobs.ListJobs(
            job_service_pb2.ListJobsRequest(page_size=2, page_token=token), metadata=svc.owner
        )
        names += [j.name for j in response.jobs]
        token = response.next_page_token
        if not token:
            break
    assert names == list(reversed(mine))
    everything = await svc.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=svc.admin)
    assert len(everything.jobs) == 6
    theirs = await svc.jobs.ListJobs(
        job_service_pb2.ListJobsRequest(owner=OTHER), metadata=svc.admin
    )
    assert {j.owner for j in theirs.jobs} == {OTHER}


async def test_list_filters_and_bad_input(svc: Jobs) -> None:
    a = await svc.create("type.a")
    await svc.create("type.b")
    await svc.claim(("type.b",))
    response = await svc.jobs.ListJobs(
        job_service_pb2.ListJobsRequest(states=[job_pb2.JOB_STATE_QUEUED]), metadata=svc.owner
    )
    assert [j.name for j in response.jobs] == [a.name]
    response = await svc.jobs.ListJobs(
        job_service_pb2.ListJobsRequest(types=["type.b"]), metadata=svc.owner
    )
    assert [j.type for j in response.jobs] == ["type.b"]
    later = job_service_pb2.ListJobsRequest()
    later.create_time_after.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    assert list((await svc.jobs.ListJobs(later, metadata=svc.owner)).jobs) == []
    for request, reason in [
        (job_service_pb2.ListJobsRequest(page_size=-1), "INVALID_PAGE_SIZE"),
        (job_service_pb2.ListJobsRequest(page_token="garbage"), "INVALID_PAGE_TOKEN"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.jobs.ListJobs(request, metadata=svc.owner)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(err.value).reason == reason
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.ListJobs(job_service_pb2.ListJobsRequest(owner=OTHER), metadata=svc.owner)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_page_token_is_bound_to_its_filters(svc: Jobs) -> None:
    for _ in range(3):
        await svc.create()
    first = await svc.jobs.ListJobs(
        job_service_pb2.ListJobsRequest(page_size=1), metadata=svc.owner
    )
    changed = job_service_pb2.ListJobsRequest(
        page_size=1, page_token=first.next_page_token, types=["other.type"]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.ListJobs(changed, metadata=svc.owner)
    assert error_info(err.value).reason == "INVALID_PAGE_TOKEN"


async def test_queue_stats(svc: Jobs) -> None:
    await svc.create(priority=1)
    await svc.create(priority=1)
    await svc.create("other.type")
    [claimed] = await svc.claim(max_jobs=1)
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
    )
    await svc.claim(("other.type",))
    stats = await svc.jobs.GetQueueStats(job_service_pb2.GetQueueStatsRequest(), metadata=svc.admin)
    depths = {(d.type, d.priority): (d.ready, d.scheduled) for d in stats.depths}
    assert depths == {("test.noop", 1): (1, 0)}
    assert stats.running == 1
    assert [w.window.seconds for w in stats.windows] == [60, 300, 900]
    assert stats.windows[0].succeeded == 1 and stats.windows[0].failure_rate == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.GetQueueStats(job_service_pb2.GetQueueStatsRequest(), metadata=svc.owner)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_retention_deletes_only_old_finished_jobs_in_chunks(jobs_service) -> None:  # type: ignore[no-untyped-def]
    svc = await jobs_service(
        job_retention_chunk_size=2,
        job_retention_succeeded_seconds=0,
        job_owner_max_running=0,  # the user's jobs are claimed all at once
    )
    finished = []
    for _ in range(5):
        await svc.create()
    for claimed in await svc.claim(max_jobs=5):
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
        )
        finished.append(claimed.job.name)
    queued = await svc.create()
    await svc.create("running.type")
    await svc.claim(("running.type",))
    cancelled = await svc.create()
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=cancelled.name), metadata=svc.owner
    )
    chunks: list[int] = []
    original = svc.repo.purge_finished_chunk

    async def spy(state: JobState, before: datetime, limit: int) -> int:
        n = await original(state, before, limit)
        chunks.append(n)
        assert limit == 2
        return n

    svc.repo.purge_finished_chunk = spy  # type: ignore[method-assign]
    deleted = await purge(svc.repo, svc.ctx.settings, now=datetime.now(UTC) + timedelta(seconds=1))
    assert deleted == 5  # succeeded ones only: cancelled jobs are kept for 7 days
    assert max(chunks) == 2 and sum(chunks) == 5
    counts = await svc.repo.counts_by_owner(OWNER)
    assert counts == {JobState.QUEUED: 1, JobState.RUNNING: 1, JobState.CANCELLED: 1}
    assert (await svc.get(queued.name)).state == job_pb2.JOB_STATE_QUEUED


async def test_purge_jobs_rpc_is_admin_only(svc: Jobs) -> None:
    created = await svc.create()
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=created.name), metadata=svc.owner
    )
    request = job_service_pb2.PurgeJobsRequest()
    request.finish_time_before.FromDatetime(datetime.now(UTC) + timedelta(seconds=30))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.PurgeJobs(request, metadata=svc.owner)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    response = await svc.jobs.PurgeJobs(request, metadata=svc.admin)
    assert response.deleted_count == 1
    bad = job_service_pb2.PurgeJobsRequest(states=[job_pb2.JOB_STATE_QUEUED])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.PurgeJobs(bad, metadata=svc.admin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_job_counts_and_delete_user_jobs(svc: Jobs) -> None:
    for _ in range(3):
        await svc.create()
    await svc.claim(max_jobs=1)
    kept = await svc.create(md=svc.other)
    counts = await svc.jobs.GetJobCounts(
        job_service_pb2.GetJobCountsRequest(owner=OWNER), metadata=svc.service
    )
    assert counts.total == 3
    assert counts.state_counts["JOB_STATE_QUEUED"] == 2
    assert counts.state_counts["JOB_STATE_RUNNING"] == 1
    assert counts.state_counts["JOB_STATE_DEAD"] == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.DeleteUserJobs(
            job_service_pb2.DeleteUserJobsRequest(owner=OWNER), metadata=svc.owner
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    response = await svc.jobs.DeleteUserJobs(
        job_service_pb2.DeleteUserJobsRequest(owner=OWNER), metadata=svc.service
    )
    assert (response.cancelled_count, response.deleted_count) == (3, 3)
    assert await svc.repo.counts_by_owner(OWNER) == {}
    assert (await svc.get(kept.name)).state == job_pb2.JOB_STATE_QUEUED


async def test_watch_job_streams_changes_until_final(svc: Jobs) -> None:
    created = await svc.create()
    seen: list[job_pb2.Job] = []

    async def watch() -> None:
        async for response in svc.jobs.WatchJob(
            job_service_pb2.WatchJobRequest(name=created.name), metadata=svc.owner
        ):
            seen.append(response.job)

    watcher = asyncio.create_task(watch())

    async def seen_initial() -> bool:
        return bool(seen)

    await wait_until(seen_initial)
    [claimed] = await svc.claim()
    for percent in (10, 60):
        await svc.workers.ReportProgress(
            worker_service_pb2.ReportProgressRequest(
                lease=lease_of(claimed), percent=percent, message=f"{percent}"
            ),
            metadata=svc.service,
        )

    async def seen_progress() -> bool:
        return any(j.progress_percent == 60 for j in seen)

    await wait_until(seen_progress)
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
    )
    await asyncio.wait_for(watcher, 30)
    assert seen[0].state == job_pb2.JOB_STATE_QUEUED
    assert seen[-1].state == job_pb2.JOB_STATE_SUCCEEDED
    progress = [j.progress_percent for j in seen if j.state == job_pb2.JOB_STATE_RUNNING]
    assert progress == sorted(progress) and progress[-1] == 60


async def test_delete_user_jobs_takes_the_users_batches_with_jobs_others_added(svc: Jobs) -> None:
    # An admin may add a job of its own to anyone's batch; deleting the batch's owner deletes
    # the batch with every job in it (the admin's too), as a batch never outlives its owner.
    batch = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")]),
        metadata=svc.owner,
    )
    added = await svc.jobs.CreateJob(
        job_service_pb2.CreateJobRequest(
            job=job_pb2.JobSpec(type="test.noop"), batch=batch.batch.name
        ),
        metadata=svc.admin,
    )
    response = await svc.jobs.DeleteUserJobs(
        job_service_pb2.DeleteUserJobsRequest(owner=OWNER), metadata=svc.service
    )
    assert (response.deleted_count, response.deleted_batches) == (1, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.get(added.job.name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.GetBatch(
            job_service_pb2.GetBatchRequest(name=batch.batch.name), metadata=svc.admin
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
