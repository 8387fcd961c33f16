"""``mediagrid.jobs.v1.JobService``: the client-facing RPCs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from common import pagination, timestamps
from common.activity import ActivityRecorder
from common.context import Principal, current_principal
from common.errors import InvalidArgument, NotFound, Violations
from common.settings import Settings
from services.jobs import access, convert, job_types, watching
from services.jobs.metrics import JobMetrics
from services.jobs.models import Batch, Job, ListFilter
from services.jobs.notifier import Notifier
from services.jobs.quotas import quota_for
from services.jobs.repository import JobRepository
from services.jobs.retention import purge
from services.jobs.states import CLAIMABLE, FINAL, JobState
from services.jobs.validation import (
    check_owner,
    check_page_size,
    check_types,
    parse_name,
    validate_spec,
)


def _spec_from_proto(
    message: job_pb2.JobSpec, settings: Settings, prefix: str, now: datetime
) -> tuple[Any, list[Any]]:
    return validate_spec(
        type=message.type,
        payload=convert.struct_to_dict(message.payload),
        priority=message.priority,
        schedule_time=timestamps.from_timestamp(
            message.schedule_time, message.HasField("schedule_time")
        ),
        max_attempts=message.max_attempts,
        request_id=message.request_id,
        files=list(message.files),
        settings=settings,
        prefix=prefix,
        now=now,
        priority_max=settings.job_service_priority_max,
    )


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        repo: JobRepository,
        notifier: Notifier,
        settings: Settings,
        activity: ActivityRecorder,
        metrics: JobMetrics,
    ) -> None:
        self.repo = repo
        self.notifier = notifier
        self.settings = settings
        self.activity = activity
        self.metrics = metrics
        self.job_types = job_types.registry(settings)

    # --- helpers ------------------------------------------------------------------------

    async def _visible_job(self, name: str, principal: Principal, *, position: bool = False) -> Job:
        job_id = parse_name(name, "jobs")
        try:
            job = await self.repo.get_job(job_id, with_position=position)
        except NotFound:
            if principal.is_admin:
                raise
            raise access.denied(name) from None
        if not access.may_act_on(principal, job.owner):
            raise access.denied(name)
        return job

    async def _authorized_batch(self, name: str, principal: Principal) -> uuid.UUID:
        """The id of batch ``name`` once ``principal`` may act on it (owner or admin)."""
        batch_id = parse_name(name, "batches")
        try:
            owner = await self.repo.batch_owner(batch_id)
        except NotFound:
            if principal.is_admin:
                raise
            raise access.denied(name) from None
        if not access.may_act_on(principal, owner):
            raise access.denied(name)
        return batch_id

    async def _visible_batch(self, name: str, principal: Principal) -> Batch:
        return await self.repo.get_batch(await self._authorized_batch(name, principal))

    # --- jobs ---------------------------------------------------------------------------

    async def CreateJob(
        self, request: job_service_pb2.CreateJobRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.CreateJobResponse:
        principal = current_principal()
        spec, violations = _spec_from_proto(request.job, self.settings, "job", datetime.now(UTC))
        found = Violations()
        found.extend(violations)
        found.raise_if_any()
        assert spec is not None
        job_types.check_specs(self.job_types, principal, [spec], self.settings)
        owner = access.job_owner(
            principal, check_owner(request.owner) if request.owner else "", spec.type
        )
        batch_id = None
        if request.batch:
            batch_id = await self._authorized_batch(request.batch, principal)
        job = await self.repo.create_job(
            owner, spec, batch_id, quota_for(principal, owner, self.settings)
        )
        # A request_id seen before may name a job in any state. A woken claim runs first:
        # it sends its statement before this call builds and sends its answer.
        if job.state in CLAIMABLE and self.notifier.wake_queue((job.type,)):
            await asyncio.sleep(0)
        self.metrics.created_jobs(job.type, 1)
        await self.activity.record("jobs.create", job.name, {"type": job.type})
        return job_service_pb2.CreateJobResponse(job=convert.job_to_proto(job))

    async def GetJob(
        self, request: job_service_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.GetJobResponse:
        job = await self._visible_job(request.name, current_principal(), position=True)
        return job_service_pb2.GetJobResponse(job=convert.job_to_proto(job))

    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.ListJobsResponse:
        principal = current_principal()
        limit = check_page_size(request.page_size, self.settings)
        owner: str | None = request.owner or None
        if owner is not None:
            check_owner(owner)
        if not principal.is_admin:
            if owner is not None and owner != principal.name:
                raise access.denied(owner)
            owner = principal.name
        found = Violations()
        found.extend(check_types(request.types))
        found.raise_if_any()
        flt = ListFilter(
            owner=owner,
            states=tuple(convert.state_from_proto(s, "states") for s in request.states),
            types=tuple(request.types),
            batch_id=parse_name(request.batch, "batches", "batch") if request.batch else None,
            created_after=timestamps.from_timestamp(
                request.create_time_after, request.HasField("create_time_after")
            ),
            created_before=timestamps.from_timestamp(
                request.create_time_before, request.HasField("create_time_before")
            ),
        )
        jobs, next_token = await pagination.page(
            "ListJobs",
            flt.model_dump(),
            request.page_token,
            limit,
            lambda after, rows: self.repo.list_jobs(flt, convert.job_cursor(after), rows),
            lambda job: (job.created_at, str(job.id)),
            pagination.BY_TIME,
        )
        return job_service_pb2.ListJobsResponse(
            jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=next_token
        )

    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.CancelJobResponse:
        job = await self._visible_job(request.name, current_principal())
        job = await self.repo.cancel_job(job.id)
        await self.activity.record("jobs.cancel", job.name)
        return job_service_pb2.CancelJobResponse(job=convert.job_to_proto(job))

    async def RetryJob(
        self, request: job_service_pb2.RetryJobRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.RetryJobResponse:
        principal = current_principal()
        job = await self._visible_job(request.name, principal)
        job = await self.repo.retry_job(
            job.id, job.owner, quota_for(principal, job.owner, self.settings)
        )
        await self.activity.record("jobs.retry", job.name)
        return job_service_pb2.RetryJobResponse(job=convert.job_to_proto(job))

    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        principal = current_principal()
        job_id = parse_name(request.name, "jobs")
        with self.notifier.job(str(job_id)) as changed:
            job = await self._visible_job(request.name, principal, position=True)
            yield job_service_pb2.WatchJobResponse(job=convert.job_to_proto(job))
            last = job
            while not last.finished:
                await changed.wait()
                try:
                    job = await watching.reread(
                        lambda: self.repo.get_job(job_id, with_position=True),
                        changed,
                        request.name,
                    )
                except NotFound:
                    return  # deleted (owner deleted or purged): nothing more will change
                if _job_changed(last, job):
                    yield job_service_pb2.WatchJobResponse(job=convert.job_to_proto(job))
                last = job

    # --- batches ------------------------------------------------------------------------

    async def CreateBatch(
        self, request: job_service_pb2.CreateBatchRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.CreateBatchResponse:
        principal = current_principal()
        if not request.jobs:
            raise InvalidArgument.field(
                "jobs", "at least one job is required", reason="EMPTY_BATCH"
            )
        if len(request.jobs) > self.settings.job_batch_max_jobs:
            raise InvalidArgument.field(
                "jobs",
                f"at most {self.settings.job_batch_max_jobs} jobs per batch",
                reason="BATCH_TOO_LARGE",
            )
        if len(request.display_name) > 200:
            raise InvalidArgument.field("display_name", "at most 200 characters")
        now = datetime.now(UTC)
        specs = []
        found = Violations()
        for index, message in enumerate(request.jobs):
            if message.request_id:
                found.add(f"jobs[{index}].request_id", "use the batch's request_id instead")
            spec, problems = _spec_from_proto(message, self.settings, f"jobs[{index}]", now)
            found.extend(problems)
            if spec is not None:
                specs.append(spec)
        found.raise_if_any(limit=job_types.MAX_VIOLATIONS)
        job_types.check_specs(self.job_types, principal, specs, self.settings, job_types.batch_path)
        batch, ids, created = await self.repo.create_batch(
            principal.name,
            request.display_name,
            request.request_id or None,
            specs,
            self.settings.job_batch_insert_chunk,
            quota_for(principal, principal.name, self.settings),
        )
        if created:
            types = {s.type for s in specs}
            self.notifier.wake_queue(types)
            for job_type in types:
                self.metrics.created_jobs(job_type, sum(1 for s in specs if s.type == job_type))
            await self.activity.record("jobs.create_batch", batch.name, {"jobs": str(len(ids))})
        else:  # a request_id seen before: the batch's counts as they are now
            batch = await self.repo.get_batch(batch.id)
        return job_service_pb2.CreateBatchResponse(
            batch=convert.batch_to_proto(batch), job_names=[f"jobs/{i}" for i in ids]
        )

    async def GetBatch(
        self, request: job_service_pb2.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.GetBatchResponse:
        batch = await self._visible_batch(request.name, current_principal())
        return job_service_pb2.GetBatchResponse(batch=convert.batch_to_proto(batch))

    async def CancelBatch(
        self, request: job_service_pb2.CancelBatchRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.CancelBatchResponse:
        batch_id = await self._authorized_batch(request.name, current_principal())
        cancelled = await self.repo.cancel_batch(batch_id)
        batch = await self.repo.get_batch(batch_id)
        await self.activity.record("jobs.cancel_batch", batch.name, {"cancelled": str(cancelled)})
        return job_service_pb2.CancelBatchResponse(
            batch=convert.batch_to_proto(batch), cancelled_count=cancelled
        )

    async def WatchBatch(
        self, request: job_service_pb2.WatchBatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_service_pb2.WatchBatchResponse]:
        principal = current_principal()
        batch_id = parse_name(request.name, "batches")
        with self.notifier.batch(str(batch_id)) as changed:
            batch = await self._visible_batch(request.name, principal)
            yield job_service_pb2.WatchBatchResponse(batch=convert.batch_to_proto(batch))
            last = batch
            while not last.done:
                await changed.wait()
                try:
                    batch = await watching.reread(
                        lambda: self.repo.get_batch(batch_id), changed, request.name
                    )
                except NotFound:
                    return
                if (batch.state_counts, batch.progress_percent) != (
                    last.state_counts,
                    last.progress_percent,
                ):
                    yield job_service_pb2.WatchBatchResponse(batch=convert.batch_to_proto(batch))
                last = batch

    # --- operations ---------------------------------------------------------------------

    async def GetQueueStats(
        self, request: job_service_pb2.GetQueueStatsRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.GetQueueStatsResponse:
        access.require_admin_or_service()
        found = Violations()
        found.extend(check_types(request.types))
        found.raise_if_any()
        stats = await self.repo.queue_stats(list(request.types))
        return job_service_pb2.GetQueueStatsResponse(
            depths=[job_pb2.QueueDepth(**d.model_dump()) for d in stats.depths],
            oldest_wait=convert.duration(stats.oldest_wait_seconds),
            running=stats.running,
            windows=[
                job_pb2.ThroughputWindow(
                    window=convert.duration(w.seconds),
                    succeeded=w.succeeded,
                    failed=w.failed,
                    jobs_per_second=w.jobs_per_second,
                    failure_rate=w.failure_rate,
                )
                for w in stats.windows
            ],
        )

    async def PurgeJobs(
        self, request: job_service_pb2.PurgeJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.PurgeJobsResponse:
        access.require_admin()
        states = [convert.state_from_proto(s, "states") for s in request.states]
        not_final = [s for s in states if s not in FINAL]
        if not_final:
            raise InvalidArgument.field(
                "states",
                "only final states (SUCCEEDED, FAILED, DEAD, CANCELLED) can be purged",
                reason="STATE_NOT_FINAL",
            )
        before = timestamps.from_timestamp(
            request.finish_time_before, request.HasField("finish_time_before")
        )
        if before is not None and before > datetime.now(UTC) + timedelta(minutes=1):
            raise InvalidArgument.field("finish_time_before", "must not be in the future")
        deleted = await purge(self.repo, self.settings, states=states or None, before=before)
        await self.activity.record("jobs.purge", "jobs", {"deleted": str(deleted)})
        return job_service_pb2.PurgeJobsResponse(deleted_count=deleted)

    async def GetJobCounts(
        self, request: job_service_pb2.GetJobCountsRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.GetJobCountsResponse:
        owner = check_owner(request.owner)
        access.require_owner_view(owner)
        counts = await self.repo.counts_by_owner(owner)
        return job_service_pb2.GetJobCountsResponse(
            state_counts={convert.state_name(s): counts.get(s, 0) for s in JobState},
            total=sum(counts.values()),
        )

    async def DeleteUserJobs(
        self, request: job_service_pb2.DeleteUserJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_service_pb2.DeleteUserJobsResponse:
        owner = check_owner(request.owner)
        access.require_admin_or_service()
        result = await self.repo.delete_owner_jobs(owner, self.settings.job_delete_chunk_size)
        await self.activity.record(
            "jobs.delete_user_jobs",
            owner,
            {"cancelled": str(result.cancelled), "deleted": str(result.deleted)},
        )
        return job_service_pb2.DeleteUserJobsResponse(
            cancelled_count=result.cancelled,
            deleted_count=result.deleted,
            deleted_batches=result.deleted_batches,
        )


def _job_changed(before: Job, after: Job) -> bool:
    keys = ("state", "attempts", "progress_percent", "progress_message", "queue_position", "error")
    return any(getattr(before, k) != getattr(after, k) for k in keys)
