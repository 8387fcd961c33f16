"""WorkerService over a real channel: claim, leases, outcomes, late reports, reaper, wake-up."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import timestamp_pb2
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from common.grpc_errors import bad_request, error_info
from services.jobs.metrics import JobMetrics
from services.jobs.retention import reap
from tests.jobs.jobs_support import Jobs, lease_of


async def test_claim_complete_records_the_result(svc: Jobs) -> None:
    created = await svc.create(payload={"x": 1})
    [claimed] = await svc.claim()
    assert claimed.job.name == created.name
    assert claimed.job.state == job_pb2.JOB_STATE_RUNNING
    assert claimed.job.attempts == 1
    request = worker_service_pb2.CompleteJobRequest(lease=lease_of(claimed))
    request.result.update({"answer": 42})
    await svc.workers.CompleteJob(request, metadata=svc.service)
    job = await svc.get(created.name)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert dict(job.result) == {"answer": 42}
    assert job.progress_percent == 100


async def test_claim_order_is_priority_then_age(svc: Jobs) -> None:
    low = await svc.create(priority=-5)
    first = await svc.create()
    second = await svc.create()
    high = await svc.create(priority=7)
    claimed = await svc.claim(max_jobs=10)
    assert [c.job.name for c in claimed] == [high.name, first.name, second.name, low.name]


async def test_queue_position_counts_jobs_ahead(svc: Jobs) -> None:
    a = await svc.create()
    b = await svc.create(priority=1)
    c = await svc.create()
    other_type = await svc.create("other.type", priority=50)
    positions = {n: (await svc.get(n)).queue_position for n in (a.name, b.name, c.name)}
    assert positions == {b.name: 0, a.name: 1, c.name: 2}
    assert (await svc.get(other_type.name)).queue_position == 0
    await svc.claim(max_jobs=1)  # takes b
    assert (await svc.get(c.name)).queue_position == 1


async def test_retryable_failure_backs_off_then_dies(svc: Jobs) -> None:
    created = await svc.create(max_attempts=2)
    [claimed] = await svc.claim()
    failure = worker_service_pb2.FailJobRequest(
        lease=lease_of(claimed), error="boom", retryable=True
    )
    failure.retry_delay.FromMilliseconds(1)
    response = await svc.workers.FailJob(failure, metadata=svc.service)
    assert response.state == job_pb2.JOB_STATE_SCHEDULED
    await asyncio.sleep(0.01)
    [again] = await svc.claim()
    assert again.job.attempts == 2
    assert again.job.error == "boom"
    failure = worker_service_pb2.FailJobRequest(
        lease=lease_of(again), error="boom 2", retryable=True
    )
    response = await svc.workers.FailJob(failure, metadata=svc.service)
    assert response.state == job_pb2.JOB_STATE_DEAD
    job = await svc.get(created.name)
    assert (job.state, job.error) == (job_pb2.JOB_STATE_DEAD, "boom 2")


async def test_permanent_failure_is_final_and_retry_job_requeues(svc: Jobs) -> None:
    created = await svc.create()
    [claimed] = await svc.claim()
    failure = worker_service_pb2.FailJobRequest(
        lease=lease_of(claimed), error="no", retryable=False
    )
    assert (
        await svc.workers.FailJob(failure, metadata=svc.service)
    ).state == job_pb2.JOB_STATE_FAILED
    retried = await svc.jobs.RetryJob(
        job_service_pb2.RetryJobRequest(name=created.name), metadata=svc.owner
    )
    assert retried.job.state == job_pb2.JOB_STATE_QUEUED
    assert retried.job.attempts == 0
    [claimed] = await svc.claim()
    assert claimed.job.attempts == 1


async def test_late_report_after_takeover_is_failed_precondition(svc: Jobs) -> None:
    created = await svc.create()
    [first] = await svc.claim(lease=0.05, worker_id="slow")
    await asyncio.sleep(0.1)
    assert await reap(svc.repo, JobMetrics()) == 1
    [second] = await svc.claim(worker_id="fast")
    assert second.job.name == created.name and second.lease_id != first.lease_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=lease_of(first)), metadata=svc.service
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.reason == "LEASE_LOST"
    assert info.metadata["lost_jobs"] == created.name
    await svc.workers.CompleteJob(
        worker_service_pb2.CompleteJobRequest(lease=lease_of(second)), metadata=svc.service
    )
    # And the loser's late failure cannot overwrite the recorded outcome either.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.FailJob(
            worker_service_pb2.FailJobRequest(lease=lease_of(first), error="late", retryable=False),
            metadata=svc.service,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    job = await svc.get(created.name)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED and job.error.startswith("lease expired")


async def test_batched_completion_is_all_or_nothing(svc: Jobs) -> None:
    for _ in range(3):
        await svc.create()
    claimed = await svc.claim()
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=claimed[1].job.name),
        metadata=svc.owner,
    )
    completions = [job_pb2.Completion(lease=lease_of(c)) for c in claimed]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.CompleteJobs(
            worker_service_pb2.CompleteJobsRequest(completions=completions), metadata=svc.service
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).metadata["lost_jobs"] == claimed[1].job.name
    assert (await svc.get(claimed[0].job.name)).state == job_pb2.JOB_STATE_RUNNING
    response = await svc.workers.CompleteJobs(
        worker_service_pb2.CompleteJobsRequest(completions=[completions[0], completions[2]]),
        metadata=svc.service,
    )
    assert response.completed_count == 2


async def test_batched_failure_is_all_or_nothing(svc: Jobs) -> None:
    # One statement records the batch (no explicit transaction): a lost lease anywhere in it
    # must leave every other job untouched, its retry schedule included.
    for _ in range(3):
        await svc.create()
    claimed = await svc.claim()
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=claimed[2].job.name), metadata=svc.owner
    )
    failures = [job_pb2.Failure(lease=lease_of(c), error="boom", retryable=True) for c in claimed]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.FailJobs(
            worker_service_pb2.FailJobsRequest(failures=failures), metadata=svc.service
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.metadata["lost_jobs"] == claimed[2].job.name
    assert info.metadata["lost_count"] == "1"
    for kept in claimed[:2]:
        job = await svc.get(kept.job.name)
        assert job.state == job_pb2.JOB_STATE_RUNNING and job.error == ""
    response = await svc.workers.FailJobs(
        worker_service_pb2.FailJobsRequest(failures=failures[:2]), metadata=svc.service
    )
    assert list(response.states) == [job_pb2.JOB_STATE_SCHEDULED] * 2


async def test_heartbeat_extends_and_reports_lost_leases(svc: Jobs) -> None:
    await svc.create()
    await svc.create()
    a, b = await svc.claim(lease=1)
    await svc.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(name=b.job.name),
        metadata=svc.owner,
    )
    request = worker_service_pb2.HeartbeatRequest(worker_id="w", leases=[lease_of(a), lease_of(b)])
    request.lease_duration.FromSeconds(120)
    response = await svc.workers.Heartbeat(request, metadata=svc.service)
    assert [lost.job for lost in response.lost] == [b.job.name]
    job = await svc.get(a.job.name)
    assert job.lease_expire_time.ToSeconds() - a.job.lease_expire_time.ToSeconds() > 60


async def test_release_gives_the_attempt_back(svc: Jobs) -> None:
    created = await svc.create(max_attempts=1)
    [claimed] = await svc.claim()
    response = await svc.workers.ReleaseJobs(
        worker_service_pb2.ReleaseJobsRequest(leases=[lease_of(claimed)]), metadata=svc.service
    )
    assert response.released_count == 1
    job = await svc.get(created.name)
    assert (job.state, job.attempts) == (job_pb2.JOB_STATE_QUEUED, 0)


async def test_reaper_sends_exhausted_jobs_to_dead(svc: Jobs) -> None:
    created = await svc.create(max_attempts=1)
    await svc.claim(lease=0.01)
    await asyncio.sleep(0.05)
    assert await reap(svc.repo, JobMetrics()) == 1
    assert (await svc.get(created.name)).state == job_pb2.JOB_STATE_DEAD


async def until_a_claim_waits(svc: Jobs) -> None:
    """Return once a ClaimJobs call is registered with the notifier (fail if none ever is)."""
    notifier = svc.server.services[0].background[0].__self__
    for _ in range(3000):
        if notifier.waiter_count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no claim started waiting")


async def test_idle_claim_wakes_on_create(svc: Jobs) -> None:
    await svc.ctx.pool.fetchval("SELECT 1")
    wait_seconds = 30.0
    claim = asyncio.create_task(svc.claim(wait=wait_seconds))
    # Let the claim reach its wait: until it is registered with the notifier, poll briefly.
    await until_a_claim_waits(svc)
    loop = asyncio.get_running_loop()
    started = loop.time()
    created = await svc.create()
    claimed = await asyncio.wait_for(claim, timeout=wait_seconds)
    assert [c.job.name for c in claimed] == [created.name]
    assert loop.time() - started < wait_seconds  # returned by the NOTIFY, not the timeout


async def test_idle_claim_takes_a_job_scheduled_while_it_waits(svc: Jobs) -> None:
    """The create's NOTIFY makes the waiting claim look up when the job becomes due; without
    it the claim would sleep through its whole wait and return nothing."""
    wait_seconds = 30.0
    claim = asyncio.create_task(svc.claim(wait=wait_seconds))
    await until_a_claim_waits(svc)
    when = timestamp_pb2.Timestamp()
    when.GetCurrentTime()
    when.seconds += 1
    created = await svc.create(schedule_time=when)
    assert created.state == job_pb2.JOB_STATE_SCHEDULED
    claimed = await asyncio.wait_for(claim, timeout=wait_seconds + 10)
    assert [c.job.name for c in claimed] == [created.name]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_jobs": 0}, "max_jobs"),
        ({"max_jobs": 100_000}, "max_jobs"),
        ({"types": ()}, "types"),
        ({"types": ("Bad Type",)}, "types[0]"),
        ({"worker_id": ""}, "worker_id"),
        ({"wait": 10_000.0}, "wait"),
    ],
)
async def test_bad_claims_are_invalid_and_claim_nothing(
    svc: Jobs, kwargs: dict[str, object], field: str
) -> None:
    created = await svc.create()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.claim(**kwargs)  # type: ignore[arg-type]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in bad_request(err.value).field_violations]
    assert (await svc.get(created.name)).state == job_pb2.JOB_STATE_QUEUED


async def test_unknown_and_malformed_leases(svc: Jobs) -> None:
    created = await svc.create()
    [claimed] = await svc.claim()
    unknown_job = job_pb2.LeaseRef(
        job="jobs/00000000-0000-4000-8000-000000000000", lease_id=claimed.lease_id
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=unknown_job), metadata=svc.service
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    wrong_lease = job_pb2.LeaseRef(
        job=created.name, lease_id="00000000-0000-4000-8000-000000000000"
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.ReportProgress(
            worker_service_pb2.ReportProgressRequest(lease=wrong_lease, percent=5),
            metadata=svc.service,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    malformed = job_pb2.LeaseRef(job=created.name, lease_id="nope")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.workers.CompleteJob(
            worker_service_pb2.CompleteJobRequest(lease=malformed), metadata=svc.service
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await svc.get(created.name)).state == job_pb2.JOB_STATE_RUNNING
