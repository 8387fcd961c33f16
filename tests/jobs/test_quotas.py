"""The per-owner quota of waiting jobs (job_owner_max_queued): CreateJob and CreateBatch."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2

from common.context import Principal
from common.grpc_errors import error_info, retry_info
from services.jobs.quotas import REASON, quota_for
from services.jobs.states import JobState
from tests.jobs.jobs_support import OTHER, OWNER, Jobs, JobsFactory, lease_of

LIMIT = 3


def specs(n: int) -> list[job_pb2.JobSpec]:
    return [job_pb2.JobSpec(type="test.noop") for _ in range(n)]


async def waiting(svc: Jobs, owner: str = OWNER) -> int:
    counts = await svc.repo.counts_by_owner(owner)
    return counts.get(JobState.QUEUED, 0) + counts.get(JobState.SCHEDULED, 0)


def assert_quota_error(err: grpc.aio.AioRpcError, queued: int) -> None:
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(err)
    assert info is not None and info.reason == REASON
    assert dict(info.metadata) == {"limit": str(LIMIT), "queued": str(queued)}
    retry = retry_info(err)
    assert retry is not None and retry.retry_delay.ToNanoseconds() == 7 * 10**9


@pytest.fixture
async def svc(jobs_service: JobsFactory) -> Jobs:
    return await jobs_service(job_owner_max_queued=LIMIT, job_owner_quota_retry_seconds=7.0)


async def test_below_and_at_the_quota_creating_works_and_above_it_is_refused(svc: Jobs) -> None:
    for _ in range(LIMIT):
        await svc.create()
    assert await waiting(svc) == LIMIT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create()
    assert_quota_error(err.value, LIMIT)
    assert await waiting(svc) == LIMIT
    # Scheduled jobs count too; another user's quota is their own.
    await svc.create(md=svc.other)


async def test_a_started_job_frees_its_place(svc: Jobs) -> None:
    for _ in range(LIMIT):
        await svc.create()
    [claimed] = await svc.claim(max_jobs=1)
    await svc.create()  # the claimed job is running: it no longer waits
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create()
    assert_quota_error(err.value, LIMIT)
    assert claimed.job.owner == OWNER


async def test_scheduled_jobs_count(svc: Jobs) -> None:
    later = job_pb2.JobSpec(type="test.noop")
    later.schedule_time.GetCurrentTime()
    later.schedule_time.seconds += 3600
    for _ in range(LIMIT):
        await svc.jobs.CreateJob(job_service_pb2.CreateJobRequest(job=later), metadata=svc.owner)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create()
    assert_quota_error(err.value, LIMIT)


async def test_a_batch_over_the_quota_is_refused_whole(svc: Jobs) -> None:
    await svc.create()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=specs(LIMIT)), metadata=svc.owner
        )
    assert_quota_error(err.value, 1)
    assert await waiting(svc) == 1
    listed = await svc.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=svc.owner)
    assert len(listed.jobs) == 1  # no job of the refused batch, no batch either
    # Exactly up to the quota is fine.
    created = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=specs(LIMIT - 1)), metadata=svc.owner
    )
    assert len(created.job_names) == LIMIT - 1
    assert await waiting(svc) == LIMIT


async def test_request_id_retries_return_the_job_at_the_quota(svc: Jobs) -> None:
    first = await svc.create(request_id="r-1")
    for _ in range(LIMIT - 1):
        await svc.create()
    again = await svc.create(request_id="r-1")
    assert again.name == first.name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create(request_id="r-2")
    assert_quota_error(err.value, LIMIT)


async def test_batch_request_id_retry_at_the_quota_returns_the_batch(svc: Jobs) -> None:
    request = job_service_pb2.CreateBatchRequest(jobs=specs(LIMIT), request_id="b-1")
    first = await svc.jobs.CreateBatch(request, metadata=svc.owner)
    again = await svc.jobs.CreateBatch(request, metadata=svc.owner)
    assert again.batch.name == first.batch.name
    assert list(again.job_names) == list(first.job_names)


async def test_jobs_a_service_creates_for_a_user_count_against_that_user(svc: Jobs) -> None:
    owning = (("authorization", "Bearer owning-token"),)
    for _ in range(LIMIT):
        await svc.create(md=svc.owner)
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.JobSpec(type="test.internal"), owner=OWNER
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.CreateJob(request, metadata=owning)
    assert_quota_error(err.value, LIMIT)
    # For a user with room, the same call works.
    request.owner = OTHER
    created = await svc.jobs.CreateJob(request, metadata=owning)
    assert created.job.owner == OTHER


async def test_services_and_admins_own_jobs_are_exempt(svc: Jobs) -> None:
    for md in (svc.service, svc.admin):
        for _ in range(LIMIT + 2):
            await svc.create(md=md)
        await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=specs(LIMIT + 1)), metadata=md
        )
    assert await waiting(svc, "users/svc") == 2 * LIMIT + 3
    assert await waiting(svc, "users/admin") == 2 * LIMIT + 3


async def test_concurrent_creations_never_overshoot(svc: Jobs) -> None:
    async def create_one() -> bool:
        try:
            await svc.create()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        return True

    async def create_batch(n: int) -> bool:
        try:
            await svc.jobs.CreateBatch(
                job_service_pb2.CreateBatchRequest(jobs=specs(n)), metadata=svc.owner
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        return True

    calls: list[Any] = [create_one() for _ in range(8)] + [create_batch(2) for _ in range(4)]
    await asyncio.gather(*calls)
    assert await waiting(svc) == LIMIT  # full (some call always fits) and never past it


async def test_cancelled_and_finished_jobs_free_their_place(svc: Jobs) -> None:
    from mediagrid.jobs.v1 import worker_service_pb2

    jobs = [await svc.create() for _ in range(LIMIT)]
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=jobs[0].name), metadata=svc.owner
    )
    [claimed] = await svc.claim(max_jobs=1)
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed)), metadata=svc.service
    )
    await svc.create()
    await svc.create()
    assert await waiting(svc) == LIMIT


def test_the_rule_exempts_only_services_and_admins_own_jobs() -> None:
    from common.settings import Settings

    settings = Settings(environment="test", job_owner_max_queued=5)

    def who(role: str) -> Principal:
        return Principal(name=f"users/{role}", user_id=role, role=role)

    assert quota_for(who("service"), "users/service", settings) is None
    assert quota_for(who("admin"), "users/admin", settings) is None
    user_quota = quota_for(who("user"), "users/user", settings)
    assert user_quota is not None and user_quota.limit == 5
    # A service creating for a user: the user's quota.
    for_user = quota_for(who("service"), "users/someone", settings)
    assert for_user is not None and for_user.limit == 5


async def test_retrying_a_job_needs_room_in_the_quota(svc: Jobs) -> None:
    failed = await svc.create()
    await svc.jobs.CancelJob(job_service_pb2.CancelJobRequest(name=failed.name), metadata=svc.owner)
    for _ in range(LIMIT):
        await svc.create()
    retry = job_service_pb2.RetryJobRequest(name=failed.name)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.RetryJob(retry, metadata=svc.owner)
    assert_quota_error(err.value, LIMIT)
    assert (await svc.get(failed.name)).state == job_pb2.JOB_STATE_CANCELLED
    # Once one has started there is room again.
    await svc.claim(max_jobs=1)
    retried = await svc.jobs.RetryJob(retry, metadata=svc.owner)
    assert retried.job.state == job_pb2.JOB_STATE_QUEUED
    # A job that cannot be retried is still FAILED_PRECONDITION, quota or not.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await svc.jobs.RetryJob(retry, metadata=svc.owner)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
