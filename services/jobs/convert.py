"""Protobuf <-> domain conversion for the jobs service (the only place that does it)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2
from mediagrid.jobs.v1 import job_pb2

from common import pagination
from common.errors import InvalidArgument
from common.timestamps import set_timestamp, timestamp
from services.jobs import models
from services.jobs.states import JobState
from services.jobs.validation import parse_name, parse_uuid

_TO_PB = {
    JobState.QUEUED: job_pb2.JOB_STATE_QUEUED,
    JobState.SCHEDULED: job_pb2.JOB_STATE_SCHEDULED,
    JobState.RUNNING: job_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: job_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: job_pb2.JOB_STATE_FAILED,
    JobState.DEAD: job_pb2.JOB_STATE_DEAD,
    JobState.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}
_FROM_PB: dict[int, JobState] = {int(v): k for k, v in _TO_PB.items()}
_RUNNING = _TO_PB[JobState.RUNNING]


def state_to_proto(state: JobState) -> Any:
    return _TO_PB[state]


def state_name(state: JobState) -> str:
    """The enum value name used as a map key, e.g. ``JOB_STATE_QUEUED``."""
    return str(job_pb2.JobState.Name(_TO_PB[state]))


def state_from_proto(value: int, field: str) -> JobState:
    try:
        return _FROM_PB[value]
    except KeyError:
        raise InvalidArgument.field(
            field, f"unknown job state {value}", reason="INVALID_STATE"
        ) from None


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    if not value.fields:
        return {}
    return json_format.MessageToDict(value)


def seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def duration(value: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(value * 1e9))
    return message


def job_to_proto(job: models.Job) -> job_pb2.Job:
    message = job_pb2.Job()
    fill_job_proto(message, job)
    return message


def fill_job_proto(message: job_pb2.Job, job: models.Job) -> None:
    """Write ``job`` into an empty ``message`` in place.

    Claims convert up to a thousand jobs per call, so each ``ClaimedJob.job`` is filled where
    it lies: no Job message built first and then copied in, no intermediate Timestamps
    (docs/benchmarks.md has the cost). Fields left at their defaults are not set.
    """
    message.name = f"jobs/{job.id}"
    message.type = job.type
    message.owner = job.owner
    message.state = _TO_PB[job.state]
    message.priority = job.priority
    if job.files:
        message.files.extend(job.files)
    if job.batch_id:
        message.batch = f"batches/{job.batch_id}"
    if job.request_id:
        message.request_id = job.request_id
    message.attempts = job.attempts
    message.max_attempts = job.max_attempts
    message.progress_percent = job.progress_percent
    message.progress_message = job.progress_message
    message.error = job.error
    if job.queue_position:
        message.queue_position = job.queue_position
    if job.worker_id:
        message.worker_id = job.worker_id
    set_timestamp(message.create_time, job.created_at)
    set_timestamp(message.schedule_time, job.available_at)
    set_timestamp(message.start_time, job.started_at)
    set_timestamp(message.finish_time, job.finished_at)
    set_timestamp(message.update_time, job.updated_at)
    set_timestamp(message.lease_expire_time, job.lease_expires_at)
    if job.payload:
        message.payload.update(job.payload)
    if job.result:
        message.result.update(job.result)


def _set_micros(message: Any, micros: int | None) -> None:
    if micros is None:
        return
    seconds, rest = divmod(micros, 1_000_000)
    message.seconds = seconds
    message.nanos = rest * 1000


def fill_claimed_proto(message: job_pb2.ClaimedJob, row: models.ClaimRow) -> None:
    """Write one claim_jobs row into an empty ``ClaimedJob`` in place, job and lease.

    The same fields as ``fill_job_proto`` of the job's model, without building the model: a
    claimed job is RUNNING, holds no result nor finish time, and its progress was reset.
    """
    job = message.job
    job.name = f"jobs/{row['id']}"
    job.type = row["type"]
    job.owner = row["owner"]
    job.state = _RUNNING
    job.priority = row["priority"]
    if files := row["files"]:
        job.files.extend(files)
    if batch_id := row["batch_id"]:
        job.batch = f"batches/{batch_id}"
    if request_id := row["request_id"]:
        job.request_id = request_id
    job.attempts = row["attempts"]
    job.max_attempts = row["max_attempts"]
    if error := row["error"]:
        job.error = error
    if worker_id := row["worker_id"]:
        job.worker_id = worker_id
    _set_micros(job.create_time, row["created_us"])
    _set_micros(job.schedule_time, row["available_us"])
    _set_micros(job.start_time, row["started_us"])
    _set_micros(job.update_time, row["updated_us"])
    _set_micros(job.lease_expire_time, row["lease_expires_us"])
    if payload := row["payload"]:
        job.payload.update(payload)
    message.lease_id = str(row["lease_id"])
    if trace_context := row["trace_context"]:
        message.trace_context.update(trace_context)


def batch_to_proto(batch: models.Batch) -> job_pb2.Batch:
    return job_pb2.Batch(
        name=batch.name,
        owner=batch.owner,
        display_name=batch.display_name,
        total_jobs=batch.total_jobs,
        state_counts={state_name(s): n for s, n in batch.state_counts.items()},
        progress_percent=batch.progress_percent,
        done=batch.done,
        create_time=timestamp(batch.created_at),
    )


def lease_from_proto(message: job_pb2.LeaseRef, field: str) -> models.LeaseRef:
    # Both ids are parsed (and so validated) here; skip pydantic's second pass (hot path).
    return models.trusted(
        models.LeaseRef,
        {
            "job_id": parse_name(message.job, "jobs", f"{field}.job"),
            "lease_id": parse_uuid(message.lease_id, f"{field}.lease_id"),
        },
    )


def lease_ids_from_proto(
    messages: Sequence[job_pb2.LeaseRef], field: str, suffix: str = ""
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The job ids and lease ids of ``messages`` (``{field}[i]{suffix}`` in errors).

    Acknowledgements carry up to a thousand leases: parsed as two lists in one pass, with no
    object per lease. Only a malformed one takes the per-lease path, for the same
    INVALID_ARGUMENT naming its field that ``lease_from_proto`` gives.
    """
    parse = uuid.UUID
    try:
        job_ids = [parse(m.job[5:]) for m in messages if m.job[:5] == "jobs/"]
        lease_ids = [parse(m.lease_id) for m in messages]
        if len(job_ids) == len(messages):
            return job_ids, lease_ids
    except ValueError:
        pass
    parsed = [lease_from_proto(m, f"{field}[{i}]{suffix}") for i, m in enumerate(messages)]
    return [p.job_id for p in parsed], [p.lease_id for p in parsed]


def lease_to_proto(lease: models.LeaseRef) -> job_pb2.LeaseRef:
    return job_pb2.LeaseRef(job=models.job_name(lease.job_id), lease_id=str(lease.lease_id))


def job_cursor(key: pagination.TimeKey | None) -> tuple[datetime, uuid.UUID] | None:
    """ListJobs' keyset cursor from a page token's ``(created_at, id)``."""
    if key is None:
        return None
    try:
        return key[0], uuid.UUID(key[1])
    except ValueError:
        raise pagination.invalid_token() from None
