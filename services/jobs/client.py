"""A small async client of ``JobService`` for the other services of the suite.

A service creates the internal jobs it owns (its account holds the literal grant
``jobs.create:job-types/{type}``) with its own token, for the user the job acts for::

    client = JobsClient(ctx.channel("jobs"), (("authorization", f"Bearer {service_token}"),))
    job = await client.create_job("video.probe", payload, files=[file], owner=user_name)

Calls made on a caller's behalf pass the caller's own ``authorization`` metadata instead.

Every unary call carries a deadline (``timeout``, per client; inside an RPC no later than
that RPC's own, via ``common.deadlines``), so a server or network that hangs ends the call
with DEADLINE_EXCEEDED instead of never. Watches have no overall deadline (wrap them in
``asyncio.timeout`` for one); they notice a dead server by a per-message idle bound instead,
and re-open the stream after a transient failure (see ``watch_job``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from common import deadlines
from common.grpc_errors import retry_info
from common.resilience import backoff_delay

Metadata = Sequence[tuple[str, str]]
JOBS_SERVICE = "mediagrid.jobs.v1.JobService"
log = logging.getLogger("mediagrid.jobs.client")

# Deadline of one unary call: every one of them is a few short statements on the server.
DEFAULT_TIMEOUT_SECONDS = 10.0
# Deadline of DeleteUserJobs, which cancels and deletes a user's jobs chunk by chunk.
DEFAULT_BULK_TIMEOUT_SECONDS = 300.0
# A watch that received nothing for this long re-opens its stream: the server answers a new
# watch with the current state at once, so a live server always resets the bound, and a dead
# one (a vanished peer leaves no error on an idle HTTP/2 stream) is noticed.
DEFAULT_WATCH_IDLE_SECONDS = 60.0
# How long a watch keeps trying to get its stream back before it raises the last error.
DEFAULT_WATCH_RETRY_SECONDS = 120.0
# Status codes after which a watch re-opens its stream: the server or the path to it failed
# (UNAVAILABLE: restarted, unreachable, or a dependency down), not the request.
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
RETRY_BASE_SECONDS = 0.2
RETRY_CAP_SECONDS = 5.0


class JobsClient:
    """``JobService`` calls with ``metadata`` (the default credentials of every call).

    Deadlines (seconds): ``timeout`` bounds every unary call (default
    ``DEFAULT_TIMEOUT_SECONDS``, 10) except ``delete_user_jobs``, bounded by
    ``bulk_timeout`` (``DEFAULT_BULK_TIMEOUT_SECONDS``, 300). Watches have no deadline:
    ``watch_idle`` (``DEFAULT_WATCH_IDLE_SECONDS``, 60) is the longest wait for a message
    before the stream is re-opened, ``watch_retry`` (``DEFAULT_WATCH_RETRY_SECONDS``, 120;
    None: forever) how long a watch tries to get its stream back before it raises. Called
    while serving an RPC, a unary call gets at most what that RPC's caller has left
    (``common.deadlines.bound``), or fails at once with ``Unavailable`` (reason
    DEADLINE_TOO_SHORT) when nothing is left.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Metadata = (),
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        bulk_timeout: float = DEFAULT_BULK_TIMEOUT_SECONDS,
        watch_idle: float = DEFAULT_WATCH_IDLE_SECONDS,
        watch_retry: float | None = DEFAULT_WATCH_RETRY_SECONDS,
    ) -> None:
        if min(timeout, bulk_timeout, watch_idle) <= 0 or (watch_retry or 0) < 0:
            raise ValueError("JobsClient timeouts must be positive")
        self.stub = job_service_pb2_grpc.JobServiceStub(channel)
        self.metadata = tuple(metadata)
        self.timeout = timeout
        self.bulk_timeout = bulk_timeout
        self.watch_idle = watch_idle
        self.watch_retry = watch_retry

    def _md(self, metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
        return self.metadata if metadata is None else tuple(metadata)

    @staticmethod
    def _bound(cap: float) -> float:
        """``cap``, or less inside an RPC whose caller's deadline is nearer (then UNAVAILABLE
        with reason DEADLINE_TOO_SHORT when nothing is left)."""
        return deadlines.bound(cap, dependency=JOBS_SERVICE)

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
            timeout=self._bound(self.timeout),
        )
        job: job_pb2.Job = response.job
        return job

    async def get_job(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Job:
        response = await self.stub.GetJob(
            job_service_pb2.GetJobRequest(name=name),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        job: job_pb2.Job = response.job
        return job

    async def watch_job(
        self, name: str, *, metadata: Metadata | None = None
    ) -> AsyncIterator[job_pb2.Job]:
        """Yield the job on every change until it reaches a final state.

        The stream is re-opened after a transient failure (UNAVAILABLE, ABORTED: the server
        restarted, the path to it broke) with backoff, and after ``watch_idle`` seconds
        without a message. A re-opened stream starts with the job's current state, which is
        yielded only when it differs from the last one yielded: the caller never sees the
        same state twice, and sees every state change that outlasted the gap. The last error
        is raised when the stream cannot be re-opened within ``watch_retry`` seconds; any
        other error at once. The watch as a whole has no deadline (bound it with
        ``asyncio.timeout`` if needed). A job deleted meanwhile ends the watch quietly, as
        the server's stream does.
        """
        request = job_service_pb2.WatchJobRequest(name=name)

        def open_stream() -> Any:
            return self.stub.WatchJob(request, metadata=self._md(metadata))

        async for response in self._follow(open_stream, _job_final):
            yield response.job

    async def watch_batch(
        self, name: str, *, metadata: Metadata | None = None
    ) -> AsyncIterator[job_pb2.Batch]:
        """Yield the batch's aggregates on every change until it is done (as ``watch_job``)."""
        request = job_service_pb2.WatchBatchRequest(name=name)

        def open_stream() -> Any:
            return self.stub.WatchBatch(request, metadata=self._md(metadata))

        async for response in self._follow(open_stream, _batch_done):
            yield response.batch

    async def _follow(
        self,
        open_stream: Callable[[], Any],
        final: Callable[[Any], bool],
    ) -> AsyncIterator[Any]:
        """The messages of a watch stream, re-opened as ``watch_job`` says, without repeats."""
        loop = asyncio.get_running_loop()
        last: Any = None
        failures = 0
        lost_at: float | None = None  # when the stream was lost and not yet got back
        while True:
            call = open_stream()
            try:
                while True:
                    async with asyncio.timeout(self.watch_idle):
                        response = await call.read()
                    if response is grpc.aio.EOF:
                        return  # the server ended the watch: final state, or deleted
                    failures, lost_at = 0, None
                    if response != last:
                        last = response
                        yield response
            except TimeoutError:
                # Silent past the idle bound: a live server answers a re-opened watch at once.
                error = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the watch stream went silent")
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND and last is not None:
                    return  # deleted while the stream was down
                if exc.code() not in RETRY_CODES:
                    raise
                error = exc
            finally:
                call.cancel()
            if last is not None and final(last):
                return
            failures += 1
            now = loop.time()
            lost_at = now if lost_at is None else lost_at
            if self.watch_retry is not None and now - lost_at >= self.watch_retry:
                raise error
            delay = backoff_delay(failures, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
            hint = retry_info(error) if isinstance(error, grpc.aio.AioRpcError) else None
            if hint is not None and hint.HasField("retry_delay"):
                delay = max(delay, hint.retry_delay.ToTimedelta().total_seconds())
            log.info(
                "watch stream lost (%s: %s), re-opening in %.2fs (failure %d)",
                error.code().name,
                error.details(),
                delay,
                failures,
            )
            await asyncio.sleep(delay)

    async def cancel_job(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Job:
        response = await self.stub.CancelJob(
            job_service_pb2.CancelJobRequest(name=name),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        job: job_pb2.Job = response.job
        return job

    async def retry_job(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Job:
        """Queue a failed, dead or cancelled job again."""
        response = await self.stub.RetryJob(
            job_service_pb2.RetryJobRequest(name=name),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        job: job_pb2.Job = response.job
        return job

    async def list_jobs(
        self,
        *,
        states: Sequence[job_pb2.JobState.ValueType] = (),
        types: Sequence[str] = (),
        owner: str = "",
        batch: str = "",
        page_size: int = 0,
        limit: int | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncIterator[job_pb2.Job]:
        """Jobs, newest first, page after page (each page one call), at most ``limit``."""
        request = job_service_pb2.ListJobsRequest(
            page_size=page_size, states=list(states), types=list(types), owner=owner, batch=batch
        )
        seen = 0
        while True:
            response = await self.stub.ListJobs(
                request, metadata=self._md(metadata), timeout=self._bound(self.timeout)
            )
            for job in response.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield job
            if not response.next_page_token or (limit is not None and seen >= limit):
                return
            request.page_token = response.next_page_token

    async def create_batch(
        self,
        jobs: Sequence[job_pb2.JobSpec],
        *,
        display_name: str = "",
        request_id: str = "",
        metadata: Metadata | None = None,
    ) -> job_service_pb2.CreateBatchResponse:
        """Create a batch of jobs in one call (idempotent when ``request_id`` is given)."""
        response: job_service_pb2.CreateBatchResponse = await self.stub.CreateBatch(
            job_service_pb2.CreateBatchRequest(
                display_name=display_name, jobs=list(jobs), request_id=request_id
            ),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        return response

    async def get_batch(self, name: str, *, metadata: Metadata | None = None) -> job_pb2.Batch:
        response = await self.stub.GetBatch(
            job_service_pb2.GetBatchRequest(name=name),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        batch: job_pb2.Batch = response.batch
        return batch

    async def cancel_batch(
        self, name: str, *, metadata: Metadata | None = None
    ) -> job_service_pb2.CancelBatchResponse:
        """Cancel every job of the batch that has not finished."""
        response: job_service_pb2.CancelBatchResponse = await self.stub.CancelBatch(
            job_service_pb2.CancelBatchRequest(name=name),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        return response

    async def queue_stats(
        self, types: Sequence[str] = (), *, metadata: Metadata | None = None
    ) -> job_service_pb2.GetQueueStatsResponse:
        """Depth per type and priority, the oldest wait, running jobs and throughput."""
        response: job_service_pb2.GetQueueStatsResponse = await self.stub.GetQueueStats(
            job_service_pb2.GetQueueStatsRequest(types=list(types)),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        return response

    async def get_job_counts(
        self, owner: str, *, metadata: Metadata | None = None
    ) -> dict[str, int]:
        """The owner's job counts keyed by state name (``JOB_STATE_QUEUED``, ...)."""
        response = await self.stub.GetJobCounts(
            job_service_pb2.GetJobCountsRequest(owner=owner),
            metadata=self._md(metadata),
            timeout=self._bound(self.timeout),
        )
        return dict(response.state_counts)

    async def delete_user_jobs(
        self, owner: str, *, metadata: Metadata | None = None
    ) -> job_service_pb2.DeleteUserJobsResponse:
        """Cancel and delete the owner's jobs (deadline: ``bulk_timeout`` unless given)."""
        response: job_service_pb2.DeleteUserJobsResponse = await self.stub.DeleteUserJobs(
            job_service_pb2.DeleteUserJobsRequest(owner=owner),
            metadata=self._md(metadata),
            timeout=self._bound(self.bulk_timeout),
        )
        return response


def _job_final(response: job_service_pb2.WatchJobResponse) -> bool:
    return response.job.state in FINAL_STATES


def _batch_done(response: job_service_pb2.WatchBatchResponse) -> bool:
    return bool(response.batch.done)


FINAL_STATES = frozenset(
    {
        job_pb2.JOB_STATE_SUCCEEDED,
        job_pb2.JOB_STATE_FAILED,
        job_pb2.JOB_STATE_DEAD,
        job_pb2.JOB_STATE_CANCELLED,
    }
)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A status of the client's own making, raised like the channel's."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
