"""``mediagrid.jobs.v1.WorkerService``: claim, heartbeat, progress and outcomes for workers.

Activity is recorded once per call (a claim or acknowledgement of N jobs is one entry with
the count and the worker), not once per job: at thousands of jobs per second a row per
job would double the write load of the queue itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
from mediagrid.jobs.v1 import job_pb2, worker_service_pb2, worker_service_pb2_grpc

from common import timestamps
from common.activity import ActivityRecorder
from common.errors import InvalidArgument, Violations
from common.settings import Settings
from services.jobs import access, convert
from services.jobs.metrics import JobMetrics
from services.jobs.models import ClaimRow, FailureReport
from services.jobs.notifier import Notifier, wait_event
from services.jobs.repository import JobRepository
from services.jobs.validation import (
    ERROR_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    WORKER_ID_MAX_LENGTH,
    check_payload_size,
    check_types,
)

# While the LISTEN connection is down, idle claims re-check this often instead.
DISCONNECTED_POLL_SECONDS = 1.0
# How often an idle claim re-checks while jobs are due but none could be claimed: their
# owners are at the cap of running jobs (a capped job's end also wakes it, by NOTIFY), or
# another claim holds them. Without a floor it would re-claim every millisecond.
DUE_UNCLAIMED_POLL_SECONDS = 0.25


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
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

    def _lease_seconds(self, value: float, field: str) -> float:
        if value < 0:
            raise InvalidArgument.field(
                field, "must not be negative", reason="INVALID_LEASE_DURATION"
            )
        if value == 0:
            return self.settings.job_lease_seconds
        if value > self.settings.job_lease_max_seconds:
            raise InvalidArgument.field(
                field,
                f"at most {self.settings.job_lease_max_seconds:.0f}s",
                reason="INVALID_LEASE_DURATION",
            )
        return value

    @staticmethod
    def _check_unique(jobs: Sequence[str], field: str) -> None:
        if len(set(jobs)) != len(jobs):
            raise InvalidArgument.field(field, "names a job twice", reason="DUPLICATE_JOB")

    def _check_batch_size(self, count: int, field: str) -> None:
        if count == 0:
            raise InvalidArgument.field(field, "at least one is required", reason="EMPTY_REQUEST")
        if count > self.settings.job_claim_max_jobs:
            raise InvalidArgument.field(
                field, f"at most {self.settings.job_claim_max_jobs} per call", reason="TOO_MANY"
            )

    async def ClaimJobs(
        self, request: worker_service_pb2.ClaimJobsRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.ClaimJobsResponse:
        principal = access.require_worker()
        found = Violations()
        found.extend(check_types(request.types))
        if not request.types:
            found.add("types", "at least one job type is required")
        if not request.worker_id or len(request.worker_id) > WORKER_ID_MAX_LENGTH:
            found.add("worker_id", f"is required, at most {WORKER_ID_MAX_LENGTH} characters")
        if not 1 <= request.max_jobs <= self.settings.job_claim_max_jobs:
            found.add("max_jobs", f"must be between 1 and {self.settings.job_claim_max_jobs}")
        wait = convert.seconds(request.wait)
        if not 0 <= wait <= self.settings.job_claim_max_wait_seconds:
            found.add(
                "wait", f"must be between 0 and {self.settings.job_claim_max_wait_seconds:.0f}s"
            )
        found.raise_if_any()
        lease = self._lease_seconds(convert.seconds(request.lease_duration), "lease_duration")
        types = sorted(set(request.types))
        access.require_claimable(principal, types)
        claimed = await self._claim_waiting(request.worker_id, types, request.max_jobs, lease, wait)
        if claimed:
            self.metrics.claimed(claimed)
        response = worker_service_pb2.ClaimJobsResponse()
        add, fill = response.jobs.add, convert.fill_claimed_proto
        for row in claimed:
            fill(add(), row)
        return response

    async def _claim_waiting(
        self, worker_id: str, types: Sequence[str], max_jobs: int, lease: float, wait: float
    ) -> list[ClaimRow]:
        deadline = time.monotonic() + wait
        with self.notifier.queue(types) as woken:
            while True:
                woken.clear()  # before the claim: a NOTIFY arriving after it is not lost
                claimed = await self.repo.claim_rows(
                    worker_id,
                    types,
                    max_jobs,
                    lease,
                    self.settings.job_priority_max,
                    self.settings.job_owner_max_running,
                )
                remaining = deadline - time.monotonic()
                if claimed or remaining <= 0:
                    return claimed
                timeout = remaining
                due = await self.repo.seconds_until_due(types)
                if due is not None:  # a scheduled job becomes due without any NOTIFY
                    timeout = min(timeout, due if due > 0 else DUE_UNCLAIMED_POLL_SECONDS)
                if not self.notifier.connected.is_set():
                    timeout = min(timeout, DISCONNECTED_POLL_SECONDS)
                await wait_event(woken, timeout)

    async def Heartbeat(
        self, request: worker_service_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.HeartbeatResponse:
        access.require_worker()
        self._check_batch_size(len(request.leases), "leases")
        leases = [
            convert.lease_from_proto(lease, f"leases[{i}]")
            for i, lease in enumerate(request.leases)
        ]
        lease_seconds = self._lease_seconds(
            convert.seconds(request.lease_duration), "lease_duration"
        )
        expiry, lost = await self.repo.heartbeat(leases, lease_seconds)
        return worker_service_pb2.HeartbeatResponse(
            lease_expire_time=timestamps.timestamp(expiry),
            lost=[convert.lease_to_proto(lease) for lease in lost],
        )

    async def ReportProgress(
        self, request: worker_service_pb2.ReportProgressRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.ReportProgressResponse:
        access.require_worker()
        lease = convert.lease_from_proto(request.lease, "lease")
        found = Violations()
        if not 0.0 <= request.percent <= 100.0:
            found.add("percent", "must be between 0 and 100")
        if len(request.message) > MESSAGE_MAX_LENGTH:
            found.add("message", f"at most {MESSAGE_MAX_LENGTH} characters")
        found.raise_if_any()
        await self.repo.report_progress(lease, request.percent, request.message)
        return worker_service_pb2.ReportProgressResponse()

    async def _complete(self, completions: Sequence[job_pb2.Completion], field: str) -> int:
        self._check_batch_size(len(completions), field)
        leases = [c.lease for c in completions]
        self._check_unique([lease.job for lease in leases], field)
        job_ids, lease_ids = convert.lease_ids_from_proto(leases, field, ".lease")
        results: list[dict[str, Any] | None] = [None] * len(completions)
        found = Violations()
        for i, completion in enumerate(completions):
            if completion.HasField("result"):
                result = convert.struct_to_dict(completion.result)
                if result:
                    found.extend(check_payload_size(result, f"{field}[{i}].result", self.settings))
                results[i] = result
        found.raise_if_any()
        finished = await self.repo.complete_ids(job_ids, lease_ids, results)
        self.metrics.finished(finished)
        return len(finished)

    async def CompleteJob(
        self, request: worker_service_pb2.CompleteJobRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.CompleteJobResponse:
        access.require_worker()
        completion = job_pb2.Completion(lease=request.lease, result=request.result)
        if not request.HasField("result"):
            completion.ClearField("result")
        await self._complete([completion], "completions")
        await self.activity.record("jobs.complete", request.lease.job)
        return worker_service_pb2.CompleteJobResponse(state=job_pb2.JOB_STATE_SUCCEEDED)

    async def CompleteJobs(
        self, request: worker_service_pb2.CompleteJobsRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.CompleteJobsResponse:
        access.require_worker()
        count = await self._complete(request.completions, "completions")
        return worker_service_pb2.CompleteJobsResponse(completed_count=count)

    async def _fail(self, failures: Sequence[job_pb2.Failure], field: str) -> list[Any]:
        self._check_batch_size(len(failures), field)
        self._check_unique([f.lease.job for f in failures], field)
        reports = []
        found = Violations()
        for i, failure in enumerate(failures):
            lease = convert.lease_from_proto(failure.lease, f"{field}[{i}].lease")
            delay = (
                convert.seconds(failure.retry_delay) if failure.HasField("retry_delay") else None
            )
            if delay is not None and not 0 <= delay <= self.settings.job_retry_max_seconds:
                found.add(
                    f"{field}[{i}].retry_delay",
                    f"must be between 0 and {self.settings.job_retry_max_seconds:.0f}s",
                )
            reports.append(
                FailureReport(
                    lease=lease,
                    error=failure.error[:ERROR_MAX_LENGTH],
                    retryable=failure.retryable,
                    retry_delay_seconds=delay,
                )
            )
        found.raise_if_any()
        finished = await self.repo.fail(
            reports, self.settings.job_retry_base_seconds, self.settings.job_retry_max_seconds
        )
        self.metrics.finished(finished)
        return [convert.state_to_proto(f.state) for f in finished]

    async def FailJob(
        self, request: worker_service_pb2.FailJobRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.FailJobResponse:
        access.require_worker()
        failure = job_pb2.Failure(
            lease=request.lease, error=request.error, retryable=request.retryable
        )
        if request.HasField("retry_delay"):
            failure.retry_delay.CopyFrom(request.retry_delay)
        states = await self._fail([failure], "failures")
        await self.activity.record(
            "jobs.fail", request.lease.job, {"retryable": str(request.retryable)}
        )
        return worker_service_pb2.FailJobResponse(state=states[0])

    async def FailJobs(
        self, request: worker_service_pb2.FailJobsRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.FailJobsResponse:
        access.require_worker()
        states = await self._fail(request.failures, "failures")
        return worker_service_pb2.FailJobsResponse(states=states)

    async def ReleaseJobs(
        self, request: worker_service_pb2.ReleaseJobsRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.ReleaseJobsResponse:
        access.require_worker()
        self._check_batch_size(len(request.leases), "leases")
        leases = [
            convert.lease_from_proto(lease, f"leases[{i}]")
            for i, lease in enumerate(request.leases)
        ]
        released = await self.repo.release(leases)
        return worker_service_pb2.ReleaseJobsResponse(released_count=released)
