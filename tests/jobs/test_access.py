"""The authorization matrix: every RPC of both services, for every kind of caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from tests.jobs.jobs_support import OWNER, Jobs, JobsFactory, declare
from tests.support.auth import bearer

CALLERS = ("owner", "other", "admin", "service")
OWNER_OR_ADMIN = {"owner", "admin"}
WORKERS = {"admin", "service"}
EVERYONE = set(CALLERS)
# One held job type per round of fixtures: released jobs of earlier rounds stay apart.
HELD_TYPES = [f"held.t{round}" for round in range(len(CALLERS) + 1)]


@pytest_asyncio.fixture
async def svc(jobs_service: JobsFactory) -> Jobs:
    # Each round of fixtures leaves one of the owner's jobs running: more than the cap of
    # running jobs by the last round.
    return await jobs_service(declare=declare(*HELD_TYPES), job_owner_max_running=0)


async def fixtures(svc: Jobs, round: int) -> dict[str, Any]:
    job = await svc.create()
    batch = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="test.noop")]),
        metadata=svc.owner,
    )
    held_type = HELD_TYPES[round]
    await svc.create(held_type)
    [claimed] = await svc.claim((held_type,))
    lease = job_pb2.LeaseRef(job=claimed.job.name, lease_id=claimed.lease_id)
    return {"job": job.name, "batch": batch.batch.name, "lease": lease}


def matrix() -> list[tuple[str, str, Callable[[dict[str, Any]], Any], set[str]]]:
    j, w = job_service_pb2, worker_service_pb2
    spec = job_pb2.JobSpec(type="test.noop")
    return [
        ("jobs", "CreateJob", lambda f: j.CreateJobRequest(job=spec), EVERYONE),
        ("jobs", "GetJob", lambda f: j.GetJobRequest(name=f["job"]), OWNER_OR_ADMIN),
        ("jobs", "ListJobs", lambda f: j.ListJobsRequest(), EVERYONE),
        ("jobs", "CancelJob", lambda f: j.CancelJobRequest(name=f["job"]), OWNER_OR_ADMIN),
        ("jobs", "RetryJob", lambda f: j.RetryJobRequest(name=f["job"]), OWNER_OR_ADMIN),
        ("jobs", "WatchJob", lambda f: j.WatchJobRequest(name=f["job"]), OWNER_OR_ADMIN),
        ("jobs", "CreateBatch", lambda f: j.CreateBatchRequest(jobs=[spec]), EVERYONE),
        ("jobs", "GetBatch", lambda f: j.GetBatchRequest(name=f["batch"]), OWNER_OR_ADMIN),
        ("jobs", "CancelBatch", lambda f: j.CancelBatchRequest(name=f["batch"]), OWNER_OR_ADMIN),
        ("jobs", "WatchBatch", lambda f: j.WatchBatchRequest(name=f["batch"]), OWNER_OR_ADMIN),
        ("jobs", "GetQueueStats", lambda f: j.GetQueueStatsRequest(), WORKERS),
        ("jobs", "PurgeJobs", lambda f: j.PurgeJobsRequest(), {"admin"}),
        (
            "jobs",
            "GetJobCounts",
            lambda f: j.GetJobCountsRequest(owner=OWNER),
            {"owner", "admin", "service"},
        ),
        (
            "jobs",
            "DeleteUserJobs",
            lambda f: j.DeleteUserJobsRequest(owner="users/nobody"),
            WORKERS,
        ),
        (
            "workers",
            "ClaimJobs",
            lambda f: w.ClaimJobsRequest(worker_id="w", types=["none.here"], max_jobs=1),
            WORKERS,
        ),
        (
            "workers",
            "Heartbeat",
            lambda f: w.HeartbeatRequest(worker_id="w", leases=[f["lease"]]),
            WORKERS,
        ),
        (
            "workers",
            "ReportProgress",
            lambda f: w.ReportProgressRequest(lease=f["lease"], percent=1),
            WORKERS,
        ),
        ("workers", "CompleteJob", lambda f: w.CompleteJobRequest(lease=f["lease"]), WORKERS),
        ("workers", "FailJob", lambda f: w.FailJobRequest(lease=f["lease"], error="e"), WORKERS),
        (
            "workers",
            "CompleteJobs",
            lambda f: w.CompleteJobsRequest(completions=[job_pb2.Completion(lease=f["lease"])]),
            WORKERS,
        ),
        (
            "workers",
            "FailJobs",
            lambda f: w.FailJobsRequest(failures=[job_pb2.Failure(lease=f["lease"])]),
            WORKERS,
        ),
        ("workers", "ReleaseJobs", lambda f: w.ReleaseJobsRequest(leases=[f["lease"]]), WORKERS),
    ]


async def call(
    svc: Jobs, stub_name: str, method: str, request: Any, metadata: Any
) -> grpc.StatusCode:
    stub = svc.jobs if stub_name == "jobs" else svc.workers
    try:
        response = getattr(stub, method)(request, metadata=metadata)
        if method.startswith("Watch"):
            async for _ in response:
                break  # the first message proves access; stop watching
            response.cancel()
        else:
            await response
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_matrix_covers_every_rpc() -> None:
    from mediagrid.jobs.v1 import job_service_pb2 as js
    from mediagrid.jobs.v1 import worker_service_pb2 as ws

    declared = {m.name for m in js.DESCRIPTOR.services_by_name["JobService"].methods} | {
        m.name for m in ws.DESCRIPTOR.services_by_name["WorkerService"].methods
    }
    assert {method for _, method, _, _ in matrix()} == declared


@pytest.mark.parametrize(
    ("stub", "method", "build", "allowed"), matrix(), ids=[m[1] for m in matrix()]
)
async def test_authorization(
    svc: Jobs, stub: str, method: str, build: Any, allowed: set[str]
) -> None:
    for round, caller in enumerate(CALLERS):
        f = await fixtures(svc, round)  # fresh resources: earlier callers may have changed them
        code = await call(svc, stub, method, build(f), getattr(svc, caller))
        if caller in allowed:
            # Allowed callers get the RPC's real answer: OK, except retrying a job that has
            # not failed (the fixtures' job is queued), which the state machine refuses.
            expected = (
                grpc.StatusCode.FAILED_PRECONDITION if method == "RetryJob" else grpc.StatusCode.OK
            )
            assert code == expected, (caller, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (caller, code)
    f = await fixtures(svc, len(CALLERS))
    assert await call(svc, stub, method, build(f), ()) == grpc.StatusCode.UNAUTHENTICATED


async def test_only_the_owning_service_of_a_type_creates_jobs_for_another_user(svc: Jobs) -> None:
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.JobSpec(type="test.internal"), owner="users/owner"
    )
    created = await svc.jobs.CreateJob(request, metadata=bearer("owning-token"))
    assert created.job.owner == "users/owner"
    for md in (svc.service, svc.admin, svc.other):  # jobs.create:* is not ownership of a type
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await svc.jobs.CreateJob(request, metadata=md)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    other_type = job_service_pb2.CreateJobRequest(
        job=job_pb2.JobSpec(type="test.noop"), owner="users/owner"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await svc.jobs.CreateJob(other_type, metadata=bearer("owning-token"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
