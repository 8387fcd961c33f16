"""A small async client of ``JobService`` for the other services of the suite.

A service creates the internal jobs it owns (its account holds the literal grant
``jobs.create:job-types/{type}``) with its own token, for the user the job acts for::

    client = JobsClient(ctx.channel("jobs"), (("authorization", f"Bearer {service_token}"),))
    job = await client.create_job("video.probe", payload, files=[file], owner=user_name)

Calls made on a caller's behalf pass the caller's own ``authorization`` metadata instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

Metadata = Sequence[tuple[str, str]]


class JobsClient:
    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata = ()) -> None:
        self.stub = job_service_pb2_grpc.JobServiceStub(channel)
        self.metadata = tuple(metadata)

    def _md(self, metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
        return self.metadata if metadata is None else tuple(metadata)

    async def create_job(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        files: Sequence[str] = (),
        request_id: str | None = None,
        max_attempts: int = 0,
        schedule_time: datetime | None = None,
        batch: str | None = None,
        owner: str | None = None,
        metadata: Metadata | None = None,
    ) -> job_pb2.Job:
        """Create a job (idempotent when ``request_id`` is given) and return it.

        ``owner`` creates the job for another user: only the service owning an internal job
        type may do that.
        """
        spec = job_pb2.JobSpec(
            type=type,
            priority=priority,
            files=list(files),
            request_id=request_id or "",
            max_attempts=max_attempts,
        )
        if payload:
            spec.payload.update(dict(payload))
        if schedule_time is not None:
            spec.schedule_time.FromDatetime(schedule_time)
        response = await self.stub.CreateJob(
            job_service_pb2.CreateJobRequest(job=spec, batch=batch or "", owner=owner or ""),
            metadata=self._md(metadata),
        )
        job: job_pb2.Job = response.job
        return job

    async def get_job(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Job:
        response = await self.stub.GetJob(
            job_service_pb2.GetJobRequest(name=name), metadata=self._md(metadata)
        )
        job: job_pb2.Job = response.job
        return job

    async def watch_job(
        self, name: str, *, metadata: Metadata | None = None
    ) -> AsyncIterator[job_pb2.Job]:
        """Yield the job on every change until it reaches a final state."""
        call = self.stub.WatchJob(
            job_service_pb2.WatchJobRequest(name=name), metadata=self._md(metadata)
        )
        async for response in call:
            yield response.job

    async def cancel_job(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Job:
        response = await self.stub.CancelJob(
            job_service_pb2.CancelJobRequest(name=name), metadata=self._md(metadata)
        )
        job: job_pb2.Job = response.job
        return job

    async def get_job_counts(
        self, owner: str, *, metadata: Metadata | None = None
    ) -> dict[str, int]:
        """The owner's job counts keyed by state name (``JOB_STATE_QUEUED``, ...)."""
        response = await self.stub.GetJobCounts(
            job_service_pb2.GetJobCountsRequest(owner=owner), metadata=self._md(metadata)
        )
        return dict(response.state_counts)

    async def delete_user_jobs(
        self, owner: str, *, metadata: Metadata | None = None
    ) -> job_service_pb2.DeleteUserJobsResponse:
        response: job_service_pb2.DeleteUserJobsResponse = await self.stub.DeleteUserJobs(
            job_service_pb2.DeleteUserJobsRequest(owner=owner), metadata=self._md(metadata)
        )
        return response
