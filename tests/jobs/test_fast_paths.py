"""The hot paths that skip the domain models give what the model paths give.

- ``convert.lease_ids_from_proto`` (acknowledgements) parses exactly what ``lease_from_proto``
  parses and refuses the same leases with the same field;
- ``convert.fill_claimed_proto`` (claims, straight from rows) writes the message that
  ``fill_job_proto`` writes for the same claimed job read back as a model;
- ``insert_job`` returns the job stored under a request_id seen before in the one statement.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.jobs.v1 import job_pb2

from common.errors import InvalidArgument
from services.jobs import convert
from services.jobs.models import JobSpec
from services.jobs.repository import JobRepository, Q

names = st.one_of(
    st.uuids().map(lambda u: f"jobs/{u}"),
    st.uuids().map(lambda u: f"jobs/{u.hex}"),
    st.uuids().map(lambda u: f"files/{u}"),
    st.text(max_size=45),
)
lease_ids = st.one_of(st.uuids().map(str), st.text(max_size=40))
leases = st.lists(
    st.builds(lambda job, lease: job_pb2.LeaseRef(job=job, lease_id=lease), names, lease_ids),
    max_size=8,
)


@given(leases)
def test_lease_lists_parse_and_refuse_like_single_leases(messages: list[job_pb2.LeaseRef]) -> None:
    try:
        expected = [
            convert.lease_from_proto(m, f"completions[{i}].lease") for i, m in enumerate(messages)
        ]
    except InvalidArgument as single:
        with pytest.raises(InvalidArgument) as listed:
            convert.lease_ids_from_proto(messages, "completions", ".lease")
        assert listed.value.violations == single.violations
        assert listed.value.reason == single.reason
        return
    job_ids, lease_id_list = convert.lease_ids_from_proto(messages, "completions", ".lease")
    assert job_ids == [e.job_id for e in expected]
    assert lease_id_list == [e.lease_id for e in expected]


async def test_a_claimed_job_from_its_row_is_the_job_read_back(pool: asyncpg.Pool) -> None:
    repo = JobRepository(pool)
    batch, _ids, _ = await repo.create_batch("users/rows", "b", None, [], 1000)
    spec = JobSpec(
        type="rows.check",
        payload={"a": [1, 2.5, "x"], "b": {"c": None}},
        priority=3,
        max_attempts=4,
        request_id="req-1",
        files=("files/f1", "files/f2"),
    )
    created = await repo.create_job("users/rows", spec, batch.id)
    [row] = await repo.claim_rows("worker-1", ["rows.check"], 10, 30.0)
    from_row = job_pb2.ClaimedJob()
    convert.fill_claimed_proto(from_row, row)

    job = await repo.get_job(created.id)
    from_model = job_pb2.ClaimedJob(lease_id=str(job.lease_id))
    convert.fill_job_proto(from_model.job, job)
    assert from_row == from_model
    assert from_row.job.state == job_pb2.JOB_STATE_RUNNING
    assert from_row.job.payload["b"]["c"] is None

    # The model path of the same claim (repository callers other than the servicer).
    await repo.create_job("users/rows", JobSpec(type="rows.check", max_attempts=1), None)
    [claimed] = await repo.claim("worker-1", ["rows.check"], 10, 30.0)
    again = await repo.get_job(claimed.job.id)
    assert claimed.job == again


async def test_a_request_id_seen_before_returns_its_job_in_one_statement(
    pool: asyncpg.Pool,
) -> None:
    repo = JobRepository(pool)
    spec = JobSpec(type="rows.once", payload={"n": 1}, max_attempts=1, request_id="same")
    first = await repo.create_job("users/once", spec, None)
    args = ("users/once", None, uuid.uuid4(), "rows.once", 0, {"n": 1}, [], "same", 1, None)
    rows = await pool.fetch(Q.insert_job, *args, None, False, None)
    assert [(r["created"], r["id"]) for r in rows] == [(False, first.id)]
    assert (await repo.create_job("users/once", spec, None)).id == first.id
    assert await pool.fetchval("SELECT count(*) FROM jobs.jobs WHERE owner = 'users/once'") == 1
