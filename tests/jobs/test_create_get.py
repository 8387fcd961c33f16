"""CreateJob / GetJob over a real channel and a real database."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2
from mediagrid.jobs.v1 import job_pb2, job_service_pb2

from common.grpc_errors import bad_request, error_info
from tests.jobs.jobs_support import OWNER, Jobs, JobsFactory


async def test_create_then_get_returns_the_same_job(svc: Jobs) -> None:
    created = await svc.create(
        "test.noop", payload={"file": "files/abc", "n": 3}, priority=5, files=["files/abc"]
    )
    assert created.name.startswith("jobs/")
    assert created.owner == OWNER
    assert created.state == job_pb2.JOB_STATE_QUEUED
    assert created.max_attempts == 3  # the default setting
    fetched = await svc.get(created.name, md=svc.owner)
    assert fetched.name == created.name
    assert dict(fetched.payload) == {"file": "files/abc", "n": 3}
    assert list(fetched.files) == ["files/abc"]
    assert fetched.priority == 5
    assert fetched.queue_position == 0


async def test_request_id_makes_create_idempotent(svc: Jobs) -> None:
    first = await svc.create(request_id="req-1", payload={"a": 1})
    again = await svc.create(request_id="req-1", payload={"a": 1})
    assert again.name == first.name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create(request_id="req-1", payload={"a": 2})
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(err.value).reason == "REQUEST_ID_REUSED"


async def test_future_schedule_time_makes_the_job_scheduled(svc: Jobs) -> None:
    when = timestamp_pb2.Timestamp()
    when.GetCurrentTime()
    when.seconds += 3600
    job = await svc.create(schedule_time=when)
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    assert await svc.claim() == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": ""}, "job.type"),
        ({"type": "Bad Type"}, "job.type"),
        ({"priority": 1000}, "job.priority"),
        ({"priority": -1000}, "job.priority"),
        ({"max_attempts": -1}, "job.max_attempts"),
        ({"max_attempts": 1000}, "job.max_attempts"),
        ({"files": ["not-a-file"]}, "job.files[0]"),
        ({"request_id": "has space"}, "job.request_id"),
    ],
)
async def test_bad_specs_are_invalid_argument_and_store_nothing(
    svc: Jobs, fields: dict[str, object], field: str
) -> None:
    spec = {"type": "test.noop", **fields}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(**spec)), metadata=svc.owner
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).domain == "jobs.mediagrid"
    assert [v.field for v in bad_request(err.value).field_violations] == [field]
    assert await svc.repo.counts_by_owner(OWNER) == {}


async def test_payload_over_the_limit_is_rejected(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(job_payload_max_bytes=1024)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create(payload={"blob": "x" * 2000})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(err.value).field_violations[0].field == "job.payload"
    assert await svc.repo.counts_by_owner(OWNER) == {}


@pytest.mark.parametrize("offset", [-7200, 400 * 24 * 3600])
async def test_schedule_time_far_away_is_rejected(svc: Jobs, offset: int) -> None:
    when = timestamp_pb2.Timestamp()
    when.GetCurrentTime()
    when.seconds += offset
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.create(schedule_time=when)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(err.value).field_violations[0].field == "job.schedule_time"


async def test_get_unknown_or_malformed_names(svc: Jobs) -> None:
    missing = "jobs/00000000-0000-4000-8000-000000000000"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.get(missing, md=svc.admin)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err.value).reason == "JOB_NOT_FOUND"
    # A non-admin learns nothing about names it may not see.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.get(missing, md=svc.owner)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.get("jobs/nope", md=svc.owner)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "INVALID_NAME"
