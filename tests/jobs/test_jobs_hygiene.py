"""The hygiene layer in front of the jobs and worker services: each input the security sweep
saw end in INTERNAL (NUL into PostgreSQL, Timestamps out of range, NaN/Infinity and deep
Structs in payloads and results) is INVALID_ARGUMENT naming the field, with nothing logged."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from mediagrid.jobs.v1 import job_pb2, job_service_pb2, worker_service_pb2

from tests.common.hygiene_support import (
    Case,
    check_cases,
    expected_path,
    field,
    nested_struct,
    raw_call,
    unary,
)
from tests.jobs.jobs_support import Jobs

JOBS = "/mediagrid.jobs.v1.JobService"
FAR = timestamp_pb2.Timestamp(seconds=253_402_300_800)  # 10000-01-01
BEFORE_YEAR_1 = timestamp_pb2.Timestamp(seconds=-62_135_596_801)
BAD_NANOS = timestamp_pb2.Timestamp(seconds=0, nanos=-1)


def _spec(payload: Any = None, **fields: Any) -> job_pb2.JobSpec:
    fields.setdefault("type", "test.noop")
    spec = job_pb2.JobSpec(**fields)
    if payload is not None:
        spec.payload.update(payload)
    return spec


def _lease(job: str = "jobs/x") -> job_pb2.LeaseRef:
    return job_pb2.LeaseRef(job=job, lease_id="l")


def _cases(svc: Jobs) -> list[Case]:
    jobs, workers = svc.jobs, svc.workers
    owner, service = svc.owner, svc.service

    def create(spec: job_pb2.JobSpec, **kw: Any) -> Any:
        return unary(jobs.CreateJob, job_service_pb2.CreateJobRequest(job=spec, **kw), owner)

    def batch(*specs: job_pb2.JobSpec, **kw: Any) -> Any:
        request = job_service_pb2.CreateBatchRequest(jobs=list(specs), **kw)
        return unary(jobs.CreateBatch, request, owner)

    def deep_create(levels: int) -> Any:
        spec = field(1, b"test.noop") + field(2, nested_struct(levels))
        return raw_call(svc.channel, f"{JOBS}/CreateJob", field(1, spec), owner)

    def deep_batch(levels: int) -> Any:
        good = field(1, b"test.noop")
        bad = good + field(2, nested_struct(levels))
        body = field(1, b"b") + field(2, good) + field(2, bad)
        return raw_call(svc.channel, f"{JOBS}/CreateBatch", body, owner)

    def deep_result(levels: int) -> Any:
        body = field(1, field(1, b"jobs/x")) + field(2, nested_struct(levels))
        return raw_call(svc.channel, "/mediagrid.jobs.v1.WorkerService/CompleteJob", body, service)

    nul = "NUL_IN_STRING"
    ts = "TIMESTAMP_OUT_OF_RANGE"
    nan = "NON_FINITE_NUMBER"
    deep = "STRUCT_TOO_DEEP"
    dur = "DURATION_OUT_OF_RANGE"
    return [
        ("CreateJob type", create(_spec(type="a\x00b")), nul, "job.type"),
        ("CreateJob payload value", create(_spec({"a": {"b": "x\x00"}})), nul, "job.payload.a.b"),
        ("CreateJob payload key", create(_spec({"k\x00": 1})), nul, "job.payload.`k\\u0000`"),
        ("CreateJob owner", create(_spec(), owner="users/\x00"), nul, "owner"),
        ("CreateJob schedule_time", create(_spec(schedule_time=FAR)), ts, "job.schedule_time"),
        ("CreateJob year 0", create(_spec(schedule_time=BEFORE_YEAR_1)), ts, "job.schedule_time"),
        ("CreateJob nanos", create(_spec(schedule_time=BAD_NANOS)), ts, "job.schedule_time"),
        ("CreateJob NaN", create(_spec({"n": math.nan})), nan, "job.payload.n"),
        ("CreateJob Infinity", create(_spec({"l": [1, math.inf]})), nan, "job.payload.l[1]"),
        ("CreateJob -Infinity", create(_spec({"n": -math.inf})), nan, "job.payload.n"),
        ("CreateJob 33 levels", deep_create(33), deep, expected_path(33, "job.payload")),
        ("CreateJob 200 levels", deep_create(200), deep, expected_path(200, "job.payload")),
        (
            "CreateJob 10,000 levels",
            deep_create(10_000),
            deep,
            expected_path(10_000, "job.payload"),
        ),
        ("CreateBatch display_name", batch(_spec(), display_name="b\x00"), nul, "display_name"),
        ("CreateBatch request_id", batch(_spec(), request_id="\x00"), nul, "request_id"),
        (
            "CreateBatch schedule_time",
            batch(_spec(), _spec(schedule_time=FAR)),
            ts,
            "jobs[1].schedule_time",
        ),
        ("CreateBatch NaN", batch(_spec({"n": math.nan})), nan, "jobs[0].payload.n"),
        ("CreateBatch 300 levels", deep_batch(300), deep, expected_path(300, "jobs[1].payload")),
        (
            "ListJobs create_time_after",
            unary(jobs.ListJobs, job_service_pb2.ListJobsRequest(create_time_after=FAR), owner),
            ts,
            "create_time_after",
        ),
        (
            "ListJobs create_time_before",
            unary(
                jobs.ListJobs,
                job_service_pb2.ListJobsRequest(create_time_before=BEFORE_YEAR_1),
                owner,
            ),
            ts,
            "create_time_before",
        ),
        (
            "ListJobs types filter",
            unary(jobs.ListJobs, job_service_pb2.ListJobsRequest(types=["a", "t\x00"]), owner),
            nul,
            "types[1]",
        ),
        (
            "PurgeJobs finish_time_before",
            unary(
                jobs.PurgeJobs,
                job_service_pb2.PurgeJobsRequest(finish_time_before=FAR),
                svc.admin,
            ),
            ts,
            "finish_time_before",
        ),
        (
            "GetJob name",
            unary(jobs.GetJob, job_service_pb2.GetJobRequest(name="jobs/\x00"), owner),
            nul,
            "name",
        ),
        (
            "ClaimJobs worker_id",
            unary(
                workers.ClaimJobs,
                worker_service_pb2.ClaimJobsRequest(worker_id="w\x00", types=["test.noop"]),
                service,
            ),
            nul,
            "worker_id",
        ),
        (
            "ClaimJobs lease_duration nanos",
            unary(
                workers.ClaimJobs,
                worker_service_pb2.ClaimJobsRequest(
                    worker_id="w",
                    types=["test.noop"],
                    lease_duration=duration_pb2.Duration(nanos=2_000_000_000),
                ),
                service,
            ),
            dur,
            "lease_duration",
        ),
        (
            "Heartbeat worker_id",
            unary(
                workers.Heartbeat,
                worker_service_pb2.HeartbeatRequest(worker_id="\x00", leases=[_lease()]),
                service,
            ),
            nul,
            "worker_id",
        ),
        (
            "ReportProgress message",
            unary(
                workers.ReportProgress,
                worker_service_pb2.ReportProgressRequest(lease=_lease(), message="half\x00"),
                service,
            ),
            nul,
            "message",
        ),
        (
            "ReportProgress NaN percent",
            unary(
                workers.ReportProgress,
                worker_service_pb2.ReportProgressRequest(lease=_lease(), percent=math.nan),
                service,
            ),
            nan,
            "percent",
        ),
        (
            "CompleteJob result NUL",
            unary(
                workers.CompleteJob,
                worker_service_pb2.CompleteJobRequest(lease=_lease(), result={"out": "x\x00"}),
                service,
            ),
            nul,
            "result.out",
        ),
        (
            "CompleteJob result Infinity",
            unary(
                workers.CompleteJob,
                worker_service_pb2.CompleteJobRequest(lease=_lease(), result={"n": math.inf}),
                service,
            ),
            nan,
            "result.n",
        ),
        (
            "CompleteJob result 5,000 levels",
            deep_result(5_000),
            deep,
            expected_path(5_000, "result"),
        ),
        (
            "CompleteJobs lease",
            unary(
                workers.CompleteJobs,
                worker_service_pb2.CompleteJobsRequest(
                    completions=[
                        job_pb2.Completion(lease=_lease()),
                        job_pb2.Completion(lease=_lease("jobs/\x00")),
                    ]
                ),
                service,
            ),
            nul,
            "completions[1].lease.job",
        ),
        (
            "FailJob error",
            unary(
                workers.FailJob,
                worker_service_pb2.FailJobRequest(lease=_lease(), error="boom\x00"),
                service,
            ),
            nul,
            "error",
        ),
        (
            "FailJob retry_delay mixed signs",
            unary(
                workers.FailJob,
                worker_service_pb2.FailJobRequest(
                    lease=_lease(),
                    error="e",
                    retry_delay=duration_pb2.Duration(seconds=1, nanos=-1),
                ),
                service,
            ),
            dur,
            "retry_delay",
        ),
        (
            "FailJobs error",
            unary(
                workers.FailJobs,
                worker_service_pb2.FailJobsRequest(
                    failures=[job_pb2.Failure(lease=_lease(), error="\x00")]
                ),
                service,
            ),
            nul,
            "failures[0].error",
        ),
    ]


async def test_bad_input_is_refused_before_any_handler(
    svc: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    await svc.create()  # something a wrongly accepted request could change
    count = "SELECT count(*), count(*) FILTER (WHERE state = 'QUEUED') FROM jobs.jobs"
    before = await svc.repo.pool.fetchrow(count)
    await check_cases(_cases(svc), caplog)
    assert await svc.repo.pool.fetchrow(count) == before


async def test_anonymous_bad_input_is_still_unauthenticated(svc: Jobs) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.jobs.CreateJob(job_service_pb2.CreateJobRequest(job=_spec(type="\x00")))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


EDGES = [
    timestamp_pb2.Timestamp(seconds=-62_135_596_800),  # 0001-01-01T00:00:00Z
    timestamp_pb2.Timestamp(
        seconds=253_402_300_799, nanos=999_999_999
    ),  # 9999-12-31T23:59:59.999999999Z
]


@pytest.mark.parametrize("edge", EDGES, ids=["year 1", "year 9999"])
async def test_timestamps_at_the_limits_pass_and_are_never_internal(
    svc: Jobs, edge: timestamp_pb2.Timestamp, caplog: pytest.LogCaptureFixture
) -> None:
    import grpc

    calls = [
        svc.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=_spec(schedule_time=edge)), metadata=svc.owner
        ),
        svc.jobs.ListJobs(
            job_service_pb2.ListJobsRequest(create_time_after=edge), metadata=svc.owner
        ),
        svc.jobs.ListJobs(
            job_service_pb2.ListJobsRequest(create_time_before=edge), metadata=svc.owner
        ),
        svc.jobs.PurgeJobs(
            job_service_pb2.PurgeJobsRequest(finish_time_before=edge), metadata=svc.admin
        ),
    ]
    for call in calls:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
