"""CreateBatch atomicity, batch aggregates, CancelBatch and WatchBatch."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from common.grpc_errors import bad_request
from services.jobs.states import JobState
from tests.jobs.jobs_support import OWNER, Jobs, JobsFactory, lease_of, wait_until


def specs(n: int, **fields: object) -> list[job_pb2.JobSpec]:
    return [job_pb2.JobSpec(type="test.noop", **fields) for _ in range(n)]  # type: ignore[arg-type]


async def test_batch_creates_every_job_in_order(jobs_service) -> None:  # type: ignore[no-untyped-def]
    # Several INSERT chunks in one transaction; every job claimed at once (no running cap).
    svc = await jobs_service(job_batch_insert_chunk=7, job_owner_max_running=0)
    response = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(display_name="b", jobs=specs(20)), metadata=svc.owner
    )
    assert len(response.job_names) == 20
    assert response.batch.total_jobs == 20
    assert response.batch.state_counts == {"JOB_STATE_QUEUED": 20}
    claimed = await svc.claim(max_jobs=50)
    assert [c.job.name for c in claimed] == list(response.job_names)
    assert {c.job.batch for c in claimed} == {response.batch.name}


async def test_batch_with_one_invalid_job_stores_nothing(svc: Jobs) -> None:
    jobs = specs(5)
    jobs[3].priority = 10_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=jobs), metadata=svc.owner
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(err.value).field_violations] == ["jobs[3].priority"]
    assert await svc.repo.counts_by_owner(OWNER) == {}
    assert await svc.claim() == []


async def test_batch_request_id_is_idempotent(svc: Jobs) -> None:
    request = job_service_pb2.CreateBatchRequest(jobs=specs(3), request_id="batch-1")
    first = await svc.jobs.CreateBatch(request, metadata=svc.owner)
    again = await svc.jobs.CreateBatch(request, metadata=svc.owner)
    assert again.batch.name == first.batch.name
    assert list(again.job_names) == list(first.job_names)
    assert sum((await svc.repo.counts_by_owner(OWNER)).values()) == 3


async def test_batch_progress_cancel_and_watch(svc: Jobs) -> None:
    created = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=specs(4)), metadata=svc.owner
    )
    name = created.batch.name
    seen: list[job_pb2.Batch] = []

    async def watch() -> None:
        async for response in svc.jobs.WatchBatch(
            job_service_pb2.WatchBatchRequest(name=name), metadata=svc.owner
        ):
            seen.append(response.batch)

    watcher = asyncio.create_task(watch())

    async def seen_initial() -> bool:
        return bool(seen)

    await wait_until(seen_initial)
    a, b = await svc.claim(max_jobs=2)
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(a)), metadata=svc.service
    )
    await svc.workers.ReportProgress(
        worker_service_pb2.ReportProgressRequest(lease=lease_of(b), percent=50),
        metadata=svc.service,
    )
    batch = (
        await svc.jobs.GetBatch(job_service_pb2.GetBatchRequest(name=name), metadata=svc.owner)
    ).batch
    assert batch.state_counts == {
        "JOB_STATE_SUCCEEDED": 1,
        "JOB_STATE_RUNNING": 1,
        "JOB_STATE_QUEUED": 2,
    }
    assert batch.progress_percent == pytest.approx((100 + 50) / 4)
    assert not batch.done
    cancelled = await svc.jobs.CancelBatch(
        job_service_pb2.CancelBatchRequest(name=name), metadata=svc.owner
    )
    assert cancelled.cancelled_count == 3
    assert cancelled.batch.done
    await asyncio.wait_for(watcher, 30)
    assert seen[0].state_counts == {"JOB_STATE_QUEUED": 4}
    assert seen[-1].done and seen[-1].state_counts == {
        "JOB_STATE_SUCCEEDED": 1,
        "JOB_STATE_CANCELLED": 3,
    }


async def test_create_job_into_a_batch_requires_owning_it(svc: Jobs) -> None:
    created = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=specs(1)), metadata=svc.owner
    )
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.JobSpec(type="test.noop"), batch=created.batch.name
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.CreateJob(request, metadata=svc.other)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    job = (await svc.jobs.CreateJob(request, metadata=svc.owner)).job
    assert job.batch == created.batch.name


async def test_empty_and_oversized_batches_are_invalid(jobs_service) -> None:  # type: ignore[no-untyped-def]
    svc = await jobs_service(job_batch_max_jobs=3)
    for jobs in ([], specs(4)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.jobs.CreateBatch(
                job_service_pb2.CreateBatchRequest(jobs=jobs), metadata=svc.owner
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await svc.repo.counts_by_owner(OWNER) == {}


async def test_outcomes_for_jobs_of_many_batches_are_recorded(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(job_owner_max_running=0)  # all 500 of the user's jobs run at once
    # One statement's batch notification named every batch it touched: above ~215 batches
    # the payload passed PostgreSQL's 8000-byte NOTIFY limit and the whole statement failed.
    spec = [job_pb2.JobSpec(type="test.many")]
    watched = []
    for _ in range(500):
        created = await svc.jobs.CreateBatch(
            job_service_pb2.CreateBatchRequest(jobs=spec), metadata=svc.owner
        )
        watched.append(created.batch.name)
    claimed = await svc.claim(("test.many",), max_jobs=500)
    assert len(claimed) == 500
    succeeded, failed = claimed[:250], claimed[250:]
    await svc.workers.CompleteJobs(
        worker_service_pb2.CompleteJobsRequest(
            completions=[job_pb2.Completion(lease=lease_of(c)) for c in succeeded]
        ),
        metadata=svc.service,
    )
    await svc.workers.FailJobs(
        worker_service_pb2.FailJobsRequest(
            failures=[job_pb2.Failure(lease=lease_of(c), error="no") for c in failed]
        ),
        metadata=svc.service,
    )
    first = await svc.jobs.GetBatch(
        job_service_pb2.GetBatchRequest(name=watched[0]), metadata=svc.owner
    )
    last = await svc.jobs.GetBatch(
        job_service_pb2.GetBatchRequest(name=watched[-1]), metadata=svc.owner
    )
    assert first.batch.done and last.batch.done
    counts = await svc.repo.counts_by_owner(OWNER)
    assert (counts[JobState.SUCCEEDED], counts[JobState.FAILED]) == (250, 250)
