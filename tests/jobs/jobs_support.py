"""Helpers of the jobs tests: principals, a handle on a running jobs service with stubs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from mediagrid.jobs.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

from common.context import Principal
from common.settings import JobTypeSetting
from services.jobs.repository import JobRepository
from tests.support.auth import bearer, principal

PRINCIPALS = {
    "owner-token": principal("owner"),
    "other-token": principal("other"),
    "admin-token": principal("admin", "admin"),
    "service-token": principal("svc", "service"),
    # A service that owns the internal job type ``test.internal`` (creates it for users).
    "owning-token": Principal(
        name="users/owning-svc",
        user_id="owning-svc",
        role="service",
        permissions=frozenset({"jobs.create:*", "jobs.create:job-types/test.internal"}),
    ),
}
OWNER = "users/owner"
OTHER = "users/other"


def declare(
    *names: str, creators: tuple[str, ...] = ("user", "service", "admin"), **limits: Any
) -> list[JobTypeSetting]:
    """Declarations of test job types (any JSON payload), as ``MEDIAGRID_JOB_TYPES`` holds."""
    limits.setdefault("max_run_seconds", 3600)
    return [JobTypeSetting(type=n, creators=list(creators), **limits) for n in names]


# The job types the jobs tests create (a test declares more with ``jobs_service(declare=...)``).
TEST_JOB_TYPES = [
    *declare(
        "test.noop",
        "test.many",
        "test.a",
        "test.b",
        "test.elsewhere",
        "type.a",
        "type.b",
        "other.type",
        "running.type",
        "t.always",
        "t.broken",
        "t.count",
        "t.flaky",
        "t.hangs",
        "t.long",
        "t.parallel",
        "t.slow",
        "t.stuck",
        "t.work",
    ),
    *declare("test.internal", creators=("internal",)),
]


@dataclass
class Jobs:
    """A running jobs service and ready-made stubs/metadata for each principal."""

    server: Any
    ctx: Any
    channel: grpc.aio.Channel
    jobs: job_service_pb2_grpc.JobServiceStub
    workers: worker_service_pb2_grpc.WorkerServiceStub
    repo: JobRepository

    owner = bearer("owner-token")
    other = bearer("other-token")
    admin = bearer("admin-token")
    service = bearer("service-token")

    async def create(
        self, type: str = "test.noop", *, md: Any = None, **fields: Any
    ) -> job_pb2.Job:
        payload = fields.pop("payload", None)
        spec = job_pb2.JobSpec(type=type, **fields)
        if payload:
            spec.payload.update(payload)
        response = await self.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=spec), metadata=md or self.owner
        )
        return response.job

    async def claim(
        self,
        types: tuple[str, ...] = ("test.noop",),
        max_jobs: int = 10,
        wait: float = 0.0,
        **kw: Any,
    ) -> list[job_pb2.ClaimedJob]:
        request = worker_service_pb2.ClaimJobsRequest(
            worker_id=kw.pop("worker_id", "test-worker"), types=list(types), max_jobs=max_jobs
        )
        if wait:
            request.wait.FromNanoseconds(int(wait * 1e9))
        if "lease" in kw:
            request.lease_duration.FromNanoseconds(int(kw.pop("lease") * 1e9))
        response = await self.workers.ClaimJobs(request, metadata=kw.pop("md", self.service))
        return list(response.jobs)

    async def get(self, name: str, md: Any = None) -> job_pb2.Job:
        response = await self.jobs.GetJob(
            job_service_pb2.GetJobRequest(name=name), metadata=md or self.admin
        )
        return response.job


def lease_of(claimed: job_pb2.ClaimedJob) -> job_pb2.LeaseRef:
    return job_pb2.LeaseRef(job=claimed.job.name, lease_id=claimed.lease_id)


JobsFactory = Callable[..., Awaitable[Jobs]]


def make_runtime(
    svc: Jobs,
    handlers: dict[str, Any],
    *,
    concurrency: int = 4,
    settings: Any = None,
    worker_id: str | None = None,
    prefetch: int = 0,
) -> Any:
    """A worker runtime talking to ``svc`` over its real channel, with ``handlers``."""
    from mediagrid.jobs.v1 import worker_service_pb2_grpc

    from common.aws import AwsClients
    from services.jobs.worker.api import HandlerSpec, WorkerResources
    from services.jobs.worker.runtime import WorkerRuntime

    settings = settings or svc.ctx.settings
    specs = {
        name: value
        if isinstance(value, HandlerSpec)
        else HandlerSpec(name, value, 30.0, None, 0.01, 0.02)
        for name, value in handlers.items()
    }
    resources = WorkerResources(
        settings=settings,
        aws=AwsClients(settings),
        channel=lambda _name: svc.channel,
        call_metadata=svc.service,
    )
    return WorkerRuntime(
        worker_service_pb2_grpc.WorkerServiceStub(svc.channel),
        types=list(specs),
        resources=resources,
        settings=settings,
        concurrency=concurrency,
        prefetch=prefetch,
        worker_id=worker_id,
        handlers=specs,
    )


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    """Poll ``predicate`` until true (the deadline only guards against a hung test)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def flood(svc: Jobs, md: Any, n: int, priority: int = 100) -> list[str]:
    """``n`` test.noop jobs of ``priority`` in one batch as ``md``'s caller; their names."""
    jobs = [job_pb2.JobSpec(type="test.noop", priority=priority) for _ in range(n)]
    response = await svc.jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(jobs=jobs), metadata=md
    )
    return list(response.job_names)
