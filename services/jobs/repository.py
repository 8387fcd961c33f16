"""The only code of the jobs service that runs SQL; returns domain models from services.jobs.models.

Every state change is one statement whose WHERE clause is the state machine's guard
(``services/jobs/states.py``), so concurrent callers cannot both win a transition.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pgproto.pgproto import UUID as AsyncpgUUID

from common.db import PooledConnection, Queries, SuitePool, as_suite_pool
from common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from common.settings import Settings
from services.jobs.models import (
    Batch,
    Claimed,
    ClaimRow,
    DeletedUserJobs,
    FailureReport,
    Finished,
    Job,
    JobSpec,
    LeaseRef,
    ListFilter,
    QueueDepth,
    QueueStats,
    ThroughputWindow,
    job_name,
    trusted,
)
from services.jobs.quotas import Quota
from services.jobs.states import FINAL, RETRYABLE_FROM, JobState
from services.jobs.tracing import current_trace_context

Q = Queries(Path(__file__).parent / "sql" / "queries.sql")

QUEUE_CHANNEL = "mediagrid_jobs_queue"
CHANGE_CHANNEL = "mediagrid_jobs_change"
BATCH_CHANNEL = "mediagrid_jobs_batch"

WINDOWS_SECONDS = (60, 300, 900)

# The claim's default service band: priorities above what users may set (job_priority_max).
USER_PRIORITY_MAX: int = Settings.model_fields["job_priority_max"].default

# Raised by jobs.require_all_leases (migration 002) when an outcome batch quotes a lost lease.
LEASE_GUARD_SQLSTATE = "MGJ01"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _new_ids(n: int) -> list[uuid.UUID]:
    """``n`` random (version 4) UUIDs from one read of the system's random source, where
    ``uuid.uuid4()`` reads it once per id.

    As asyncpg's own UUID type (a ``uuid.UUID`` built in C from its 16 bytes, the type it
    decodes uuid columns to): ``uuid.UUID(bytes=..., version=4)`` costs several times more
    per id, and so do sending it and formatting its name.
    """
    raw = bytearray(os.urandom(16 * n))
    # The version (4) and variant (RFC 4122) bits, every id's at once.
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])
    data = bytes(raw)
    return [AsyncpgUUID(data[i : i + 16]) for i in range(0, 16 * n, 16)]


def _job_arrays(specs: Sequence[JobSpec]) -> tuple[list[Any], ...]:
    return (
        _new_ids(len(specs)),
        [s.type for s in specs],
        [s.priority for s in specs],
        [_dumps(s.payload) if s.payload else "{}" for s in specs],
        [_dumps(list(s.files)) if s.files else "[]" for s in specs],
        [s.request_id for s in specs],
        [s.max_attempts for s in specs],
        [s.schedule_time for s in specs],
    )


def _finished(row: asyncpg.Record) -> Finished:
    # Rows of the complete/fail statements; constructed without re-validation (hot path).
    return trusted(
        Finished,
        {
            "id": row["id"],
            "type": row["type"],
            "state": JobState(row["state"]),
            "run_seconds": row["run_seconds"],
        },
    )


# The columns of a claimed job that claim_jobs does not return: the claim sets them.
_CLAIMED_CONSTANTS: dict[str, Any] = {
    "state": JobState.RUNNING.value,
    "progress_percent": 0.0,
    "progress_message": "",
    "result": None,
    "finished_at": None,
}


def _new_batch(row: asyncpg.Record, total: int, scheduled: int) -> Batch:
    """A batch as created: its jobs all waiting (queued, or scheduled for later)."""
    counts = {JobState.QUEUED: total - scheduled, JobState.SCHEDULED: scheduled}
    return Batch.model_validate(
        {
            **{key: row[key] for key in ("id", "owner", "display_name", "request_id")},
            "total_jobs": row["total_jobs"],
            "created_at": row["created_at"],
            "state_counts": {state: n for state, n in counts.items() if n},
        }
    )


# claim_jobs returns times as microseconds since the epoch: (Job field, column prefix).
_TIMES = (
    ("available_at", "available"),
    ("lease_expires_at", "lease_expires"),
    ("created_at", "created"),
    ("started_at", "started"),
    ("updated_at", "updated"),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class JobRepository:
    """Every statement goes through ``SuitePool`` (breaker, time bound); reads are declared
    ``idempotent`` so that a dead pooled connection is retried once on a fresh one."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    # --- creating -----------------------------------------------------------------------

    async def create_job(
        self,
        owner: str,
        spec: JobSpec,
        batch_id: uuid.UUID | None,
        quota: Quota | None = None,
    ) -> Job:
        """Insert one job; with a request_id used before by ``owner``, return that job.

        With a ``quota``, RESOURCE_EXHAUSTED when the owner already has ``quota.limit``
        waiting jobs (a request_id used before still returns its job). The jobs the quota
        applies to also count against their owner's cap of running jobs (quotas.py).
        """
        limit = None if quota is None else quota.limit
        try:
            # With a request_id a second run finds the first one's job (below): safe to retry.
            rows = await self.pool.fetch(
                Q.insert_job,
                owner,
                batch_id,
                uuid.uuid4(),
                spec.type,
                spec.priority,
                spec.payload,  # jsonb: encoded by the pool's codec
                list(spec.files),
                spec.request_id,
                spec.max_attempts,
                spec.schedule_time,
                limit,
                quota is not None,
                current_trace_context(),
                idempotent=spec.request_id is not None,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("the batch does not exist", reason="BATCH_NOT_FOUND") from None
        row = rows[0] if rows else None
        if row is not None and row["created"]:
            return Job.from_row(row)
        if row is None and spec.request_id is not None:
            # Stored by a concurrent request after the statement began: visible now.
            row = await self.pool.fetchrow(
                Q.get_job_by_request_id, owner, spec.request_id, idempotent=True
            )
        if row is None and quota is not None:
            # Refused at the quota (the count it was refused at is gone with its lock).
            waiting = await self.pool.fetchval(Q.owner_waiting, owner, quota.limit, idempotent=True)
            raise quota.exceeded(waiting, 1)
        if row is None:  # deleted between the conflict and the read
            raise AlreadyExists(
                "a job with this request_id was just deleted", reason="REQUEST_ID_REUSED"
            )
        existing = Job.from_row(row)
        if existing.type != spec.type or existing.payload != spec.payload:
            raise AlreadyExists(
                "request_id was already used for a different job",
                reason="REQUEST_ID_REUSED",
                metadata={"job": existing.name},
            )
        return existing

    async def create_batch(
        self,
        owner: str,
        display_name: str,
        request_id: str | None,
        specs: Sequence[JobSpec],
        chunk: int,
        quota: Quota | None = None,
    ) -> tuple[Batch, list[uuid.UUID], bool]:
        """Create a batch and its jobs atomically.

        Returns (batch, job ids, created_now); a batch request_id seen before returns the old
        batch (its job counts not read: ``get_batch`` has them). A new batch comes with the
        counts it was created with. With a ``quota``, a batch that would take the owner past
        ``quota.limit`` waiting jobs is refused whole (RESOURCE_EXHAUSTED). Up to ``chunk``
        jobs without request ids take one statement (create_batch); more take a transaction
        with one INSERT per chunk of rows.
        """
        if len(specs) <= chunk and not any(s.request_id for s in specs):
            return await self._create_batch_statement(owner, display_name, request_id, specs, quota)
        return await self._create_batch_chunks(owner, display_name, request_id, specs, chunk, quota)

    async def _create_batch_statement(
        self,
        owner: str,
        display_name: str,
        request_id: str | None,
        specs: Sequence[JobSpec],
        quota: Quota | None,
    ) -> tuple[Batch, list[uuid.UUID], bool]:
        ids, types, priorities, payloads, files, _, attempts, times = _job_arrays(specs)
        row = await self.pool.fetchrow(
            Q.create_batch,
            uuid.uuid4(),
            owner,
            display_name,
            request_id,
            ids,
            types,
            priorities,
            payloads,
            files,
            attempts,
            times,
            None if quota is None else quota.limit,
            quota is not None,
            current_trace_context(),
            # A batch request_id makes a second run find the first one's batch: safe to retry.
            idempotent=request_id is not None,
        )
        assert row is not None
        if row["id"] is not None:
            return _new_batch(row, len(specs), int(row["scheduled"])), ids, True
        if request_id is not None:
            existing = await self.pool.fetchrow(
                Q.get_batch_by_request_id, owner, request_id, idempotent=True
            )
            if existing is not None:
                old = await self.pool.fetch(Q.batch_job_names, existing["id"], idempotent=True)
                return Batch.model_validate(dict(existing)), [r["id"] for r in old], False
        if quota is not None:
            raise quota.exceeded(int(row["waiting"]), len(specs))
        raise AlreadyExists(  # the batch of that request_id was deleted meanwhile
            "a batch with this request_id was just deleted", reason="REQUEST_ID_REUSED"
        )

    async def _create_batch_chunks(
        self,
        owner: str,
        display_name: str,
        request_id: str | None,
        specs: Sequence[JobSpec],
        chunk: int,
        quota: Quota | None,
    ) -> tuple[Batch, list[uuid.UUID], bool]:
        batch_id = uuid.uuid4()
        trace_context = current_trace_context()

        async def create(conn: PooledConnection) -> tuple[Batch, list[uuid.UUID], bool]:
            row = await conn.fetchrow(
                Q.insert_batch, batch_id, owner, display_name, request_id, len(specs)
            )
            if row is None:
                existing = await conn.fetchrow(Q.get_batch_by_request_id, owner, request_id)
                assert existing is not None
                old = [r["id"] for r in await conn.fetch(Q.batch_job_names, existing["id"])]
                return Batch.model_validate(dict(existing)), old, False
            if quota is not None:
                # The owner stays locked until this transaction ends (migration 006).
                waiting = await conn.fetchval(Q.lock_owner_waiting, owner, quota.limit)
                if waiting + len(specs) > quota.limit:
                    raise quota.exceeded(waiting, len(specs))
            ids: list[uuid.UUID] = []
            scheduled = 0
            for start in range(0, len(specs), chunk):
                part = specs[start : start + chunk]
                arrays = _job_arrays(part)
                stored = await conn.fetchrow(
                    Q.insert_jobs_count, owner, batch_id, *arrays, quota is not None, trace_context
                )
                assert stored is not None
                if stored["stored"] != len(part):
                    raise InvalidArgument.field(
                        "jobs", "request ids must be unique", reason="DUPLICATE_REQUEST_ID"
                    )
                scheduled += stored["scheduled"]
                ids.extend(arrays[0])
            return _new_batch(row, len(specs), scheduled), ids, True

        return await self.pool.transaction(create, what="create_batch")

    # --- reading ------------------------------------------------------------------------

    async def get_job(self, job_id: uuid.UUID, *, with_position: bool = False) -> Job:
        row = await self.pool.fetchrow(
            Q.get_job_with_position if with_position else Q.get_job, job_id, idempotent=True
        )
        if row is None:
            raise NotFound(f"{job_name(job_id)} does not exist", reason="JOB_NOT_FOUND")
        job = Job.from_row(row)
        if with_position and row["queue_position"] is not None:
            job = job.model_copy(update={"queue_position": row["queue_position"]})
        return job

    async def list_jobs(
        self, flt: ListFilter, cursor: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Job]:
        states = [s.value for s in flt.states] or None
        types = list(flt.types) or None
        after_time, after_id = cursor or (None, None)
        common = (flt.batch_id, flt.created_after, flt.created_before, after_time, after_id, limit)
        if flt.owner is not None:
            rows = await self.pool.fetch(
                Q.list_jobs_by_owner, flt.owner, states, types, *common, idempotent=True
            )
        else:
            rows = await self.pool.fetch(Q.list_jobs_all, states, types, *common, idempotent=True)
        return [Job.from_row(r) for r in rows]

    async def _batch_row(self, batch_id: uuid.UUID) -> asyncpg.Record:
        row = await self.pool.fetchrow(Q.get_batch, batch_id, idempotent=True)
        if row is None:
            raise NotFound(f"batches/{batch_id} does not exist", reason="BATCH_NOT_FOUND")
        return row

    async def batch_owner(self, batch_id: uuid.UUID) -> str:
        """The batch's owner (for access checks: no job counts read)."""
        return str((await self._batch_row(batch_id))["owner"])

    async def get_batch(self, batch_id: uuid.UUID) -> Batch:
        row = await self._batch_row(batch_id)
        counts = await self.pool.fetch(Q.batch_counts, batch_id, idempotent=True)
        return self._batch_with_counts(row, counts)

    @staticmethod
    def _batch_with_counts(row: asyncpg.Record, counts: Sequence[asyncpg.Record]) -> Batch:
        state_counts = {JobState(r["state"]): int(r["n"]) for r in counts}
        total = int(row["total_jobs"]) or 1
        done = sum(n for s, n in state_counts.items() if s in FINAL)
        running = sum(float(r["progress"]) for r in counts if r["state"] == JobState.RUNNING)
        progress = min(100.0, (done * 100.0 + running) / total)
        return Batch.model_validate(
            {**dict(row), "state_counts": state_counts, "progress_percent": progress}
        )

    async def counts_by_owner(self, owner: str) -> dict[JobState, int]:
        rows = await self.pool.fetch(Q.counts_by_owner, owner, idempotent=True)
        return {JobState(r["state"]): int(r["n"]) for r in rows}

    async def queue_stats(self, types: Sequence[str]) -> QueueStats:
        wanted = list(types) or None
        depths = await self.pool.fetch(Q.queue_depths, wanted, idempotent=True)
        oldest = await self.pool.fetchval(Q.oldest_wait, wanted, idempotent=True)
        running = await self.pool.fetchval(Q.running_count, wanted, idempotent=True)
        windows = await self.pool.fetch(
            Q.finished_windows, list(WINDOWS_SECONDS), wanted, idempotent=True
        )
        return QueueStats(
            depths=tuple(QueueDepth.model_validate(dict(r)) for r in depths),
            oldest_wait_seconds=max(float(oldest or 0.0), 0.0),
            running=int(running),
            windows=tuple(ThroughputWindow.model_validate(dict(r)) for r in windows),
        )

    # --- client transitions -------------------------------------------------------------

    async def cancel_jobs(self, job_ids: Sequence[uuid.UUID], reason: str) -> list[Job]:
        rows = await self.pool.fetch(Q.cancel_jobs, list(job_ids), reason)
        return [Job.from_row(r) for r in rows]

    async def cancel_job(self, job_id: uuid.UUID) -> Job:
        cancelled = await self.cancel_jobs([job_id], "cancelled")
        if cancelled:
            return cancelled[0]
        job = await self.get_job(job_id)  # NOT_FOUND when it does not exist
        raise FailedPrecondition(
            f"the job already finished ({job.state.value})",
            reason="JOB_FINISHED",
            metadata={"state": job.state.value},
        )

    async def retry_job(
        self, job_id: uuid.UUID, owner: str = "", quota: Quota | None = None
    ) -> Job:
        """Requeue a failed, dead or cancelled job; with a ``quota``, only while its ``owner``
        has room (RESOURCE_EXHAUSTED otherwise)."""
        limit = None if quota is None else quota.limit
        row = await self.pool.fetchrow(Q.retry_job, job_id, owner, limit)
        if row is None and quota is not None:
            waiting = await self.pool.fetchval(Q.owner_waiting, owner, quota.limit, idempotent=True)
        else:
            waiting = 0
        if row is not None:
            return Job.from_row(row)
        job = await self.get_job(job_id)
        if quota is not None and job.state in RETRYABLE_FROM and waiting >= quota.limit:
            raise quota.exceeded(waiting, 1)
        raise FailedPrecondition(
            f"only failed, dead or cancelled jobs can be retried (the job is {job.state.value})",
            reason="JOB_NOT_RETRYABLE",
            metadata={"state": job.state.value},
        )

    async def cancel_batch(self, batch_id: uuid.UUID) -> int:
        return int(await self.pool.fetchval(Q.cancel_batch_jobs, batch_id, "batch cancelled"))

    # --- worker transitions -------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        types: Sequence[str],
        max_jobs: int,
        lease_seconds: float,
        user_priority_max: int = USER_PRIORITY_MAX,
        owner_max_running: int = 0,
    ) -> list[Claimed]:
        """``claim_rows`` as domain models (for callers other than the servicer's claims)."""
        rows = await self.claim_rows(
            worker_id, types, max_jobs, lease_seconds, user_priority_max, owner_max_running
        )
        return [
            trusted(
                Claimed,
                {
                    "job": Job.from_row(
                        {
                            **_CLAIMED_CONSTANTS,
                            **row,
                            **{name: _from_micros(row[f"{key}_us"]) for name, key in _TIMES},
                            "payload": row["payload"] or {},
                        }
                    ),
                    "wait_seconds": row["wait_seconds"],
                    "trace_context": row["trace_context"],
                },
            )
            for row in rows
        ]

    async def claim_rows(
        self,
        worker_id: str,
        types: Sequence[str],
        max_jobs: int,
        lease_seconds: float,
        user_priority_max: int = USER_PRIORITY_MAX,
        owner_max_running: int = 0,
    ) -> list[ClaimRow]:
        """Claim up to ``max_jobs`` jobs shared fairly between their owners (docs/jobs.md).

        Jobs above ``user_priority_max`` (the most a user may set) go before all others. An
        owner whose jobs are capped (quotas.py) never has more than ``owner_max_running`` of
        them running (0: no cap). Returns the claim's rows (models.ClaimRow), in claim order.
        """
        rows: list[ClaimRow] = await self.pool.fetch(
            Q.claim_jobs,
            list(types),
            max_jobs,
            worker_id,
            uuid.uuid4(),
            lease_seconds,
            user_priority_max,
            owner_max_running,
        )
        return rows

    async def seconds_until_due(self, types: Sequence[str]) -> float | None:
        value = await self.pool.fetchval(Q.next_due, list(types), idempotent=True)
        return None if value is None else float(value)

    async def heartbeat(
        self, leases: Sequence[LeaseRef], lease_seconds: float
    ) -> tuple[datetime | None, list[LeaseRef]]:
        """Extend the held leases; return their new expiry and the leases that were lost.

        Idempotent: running it twice only moves the expiry to "now + lease" again."""
        rows = await self.pool.fetch(
            Q.heartbeat,
            [lease.job_id for lease in leases],
            [lease.lease_id for lease in leases],
            lease_seconds,
            idempotent=True,
        )
        kept = {r["id"] for r in rows}
        expiry = rows[0]["lease_expires_at"] if rows else None
        return expiry, [lease for lease in leases if lease.job_id not in kept]

    async def report_progress(self, lease: LeaseRef, percent: float, message: str) -> None:
        row = await self.pool.fetchrow(
            Q.report_progress, lease.job_id, lease.lease_id, percent, message
        )
        if row is None:
            await self._raise_lease_problem([lease])

    async def complete(
        self, items: Sequence[tuple[LeaseRef, dict[str, Any] | None]]
    ) -> list[Finished]:
        """Record successes atomically: all of them, or none when any lease was lost."""
        return await self.complete_ids(
            [lease.job_id for lease, _ in items],
            [lease.lease_id for lease, _ in items],
            [result for _, result in items],
        )

    async def complete_ids(
        self,
        job_ids: list[uuid.UUID],
        lease_ids: list[uuid.UUID],
        results: Sequence[dict[str, Any] | None],
    ) -> list[Finished]:
        """``complete`` for parallel lists of ids (the servicer's acknowledgements).

        One statement, no explicit transaction: it fails as a whole (SQLSTATE MGJ01) when a
        quoted lease is no longer held, which rolls back every row it changed.
        """
        encoded = [None if result is None else _dumps(result) for result in results]
        try:
            rows = await self.pool.fetch(Q.complete_jobs, job_ids, lease_ids, encoded)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != LEASE_GUARD_SQLSTATE:
                raise
            await self._raise_lease_problem(
                [
                    trusted(LeaseRef, {"job_id": job_id, "lease_id": lease_id})
                    for job_id, lease_id in zip(job_ids, lease_ids, strict=True)
                ]
            )
        return [_finished(r) for r in rows]

    async def fail(
        self, items: Sequence[FailureReport], base_seconds: float, cap_seconds: float
    ) -> list[Finished]:
        """Record failures atomically (one statement, like ``complete``); returns the
        outcomes in request order."""
        try:
            rows = await self.pool.fetch(
                Q.fail_jobs,
                [f.lease.job_id for f in items],
                [f.lease.lease_id for f in items],
                [f.error for f in items],
                [f.retryable for f in items],
                [f.retry_delay_seconds for f in items],
                base_seconds,
                cap_seconds,
            )
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != LEASE_GUARD_SQLSTATE:
                raise
            await self._raise_lease_problem([f.lease for f in items])
        by_id = {r["id"]: _finished(r) for r in rows}
        return [by_id[f.lease.job_id] for f in items]

    async def release(self, leases: Sequence[LeaseRef]) -> int:
        rows = await self.pool.fetch(
            Q.release_jobs,
            [lease.job_id for lease in leases],
            [lease.lease_id for lease in leases],
        )
        return len(rows)

    async def _raise_lease_problem(self, leases: Sequence[LeaseRef]) -> None:
        """Raise NOT_FOUND for unknown jobs, else FAILED_PRECONDITION naming the lost leases.

        ``leases`` are the ones a statement that recorded nothing was given; the lost ones are
        those whose job is no longer RUNNING under that lease (a lease never comes back, so
        every lease the statement found lost is still lost here).
        """
        rows = await self.pool.fetch(
            Q.lease_states, [lease.job_id for lease in leases], idempotent=True
        )
        current = {r["id"]: (r["state"], r["lease_id"]) for r in rows}
        missing = [lease for lease in leases if lease.job_id not in current]
        if missing:
            raise NotFound(
                f"{len(missing)} job(s) do not exist",
                reason="JOB_NOT_FOUND",
                metadata={"jobs": ",".join(job_name(m.job_id) for m in missing[:50])},
            )
        running = JobState.RUNNING.value
        lost = [lease for lease in leases if current[lease.job_id] != (running, lease.lease_id)]
        if not lost:  # cannot happen (see above); retrying the whole call is then safe
            raise Aborted("the outcome batch conflicted; retry it", reason="OUTCOME_CONFLICT")
        raise FailedPrecondition(
            f"{len(lost)} lease(s) are no longer held: the jobs finished, were cancelled or "
            "were taken over by another worker; nothing was recorded",
            reason="LEASE_LOST",
            metadata={
                "lost_count": str(len(lost)),
                "lost_jobs": ",".join(job_name(m.job_id) for m in lost[:50]),
                "state": current[lost[0].job_id][0] if lost else "",
            },
        )

    # --- sweeps -------------------------------------------------------------------------

    async def reap_expired(self, limit: int) -> list[tuple[uuid.UUID, str, JobState]]:
        rows = await self.pool.fetch(Q.reap_expired, limit, cap=self.pool.long_cap)
        return [(r["id"], r["type"], JobState(r["state"])) for r in rows]

    async def purge_finished_chunk(self, state: JobState, before: datetime, limit: int) -> int:
        status = await self.pool.execute(
            Q.purge_finished, state.value, before, limit, cap=self.pool.long_cap
        )
        return int(status.split()[-1])

    async def purge_empty_batches_chunk(self, before: datetime, limit: int) -> int:
        status = await self.pool.execute(
            Q.purge_empty_batches, before, limit, cap=self.pool.long_cap
        )
        return int(status.split()[-1])

    async def delete_owner_jobs(self, owner: str, chunk: int) -> DeletedUserJobs:
        """Cancel the owner's unfinished jobs, then delete all of them, chunk by chunk.

        Each chunk is a statement of its own, bounded by ``long_cap`` (and the caller's
        deadline), so a large owner never runs into the bound of a single call."""
        cancelled = deleted = 0
        cap = self.pool.long_cap
        while n := await self.pool.fetchval(Q.cancel_owner_chunk, owner, chunk, cap=cap):
            cancelled += n
        while n := await self.pool.fetchval(Q.delete_owner_chunk, owner, chunk, cap=cap):
            deleted += n
        await self.pool.execute(Q.delete_owner_batch_jobs, owner, cap=cap)
        batches = await self.pool.fetchval(Q.delete_owner_batches, owner, cap=cap)
        await self.pool.execute(Q.delete_owner_turn, owner, cap=cap)
        return DeletedUserJobs(cancelled=cancelled, deleted=deleted, deleted_batches=batches)
