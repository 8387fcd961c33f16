"""The only code of the importers that runs SQL, on their own progress tables only.

Users, jobs and files themselves are written through those services' repositories.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg

from common.db import Queries, SuitePool, as_suite_pool
from services.migration.models import (
    Checkpoint,
    FileProgress,
    ImportRun,
    JobMapping,
    Phase,
    Reject,
    RejectKind,
    RunState,
    UserMapping,
)

Q = Queries(Path(__file__).parent / "sql" / "queries.sql")


class LegacyRepository:
    """Every statement goes through ``SuitePool`` (breaker, time bound); reads are declared
    ``idempotent`` so that a dead pooled connection is retried once on a fresh one."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    # --- file import runs --------------------------------------------------------------

    async def start_run(self, run_id: str, source: str, owner_override: str | None) -> ImportRun:
        return ImportRun.from_row(
            await self.pool.fetchrow(Q.upsert_run, run_id, source, owner_override)
        )

    async def get_run(self, run_id: str) -> ImportRun | None:
        row = await self.pool.fetchrow(Q.get_run, run_id, idempotent=True)
        return None if row is None else ImportRun.from_row(row)

    async def set_run_state(self, run_id: str, state: RunState) -> bool:
        return await self.pool.fetchval(Q.set_run_state, run_id, state) is not None

    async def file_progress(self, run_id: str, source_path: str) -> FileProgress | None:
        row = await self.pool.fetchrow(Q.get_file_progress, run_id, source_path, idempotent=True)
        return None if row is None else FileProgress.from_row(row)

    async def start_file(
        self,
        run_id: str,
        source_path: str,
        *,
        size_bytes: int,
        mtime_ns: int,
        sha256: str,
        owner_id: str,
        display_name: str,
    ) -> FileProgress:
        row = await self.pool.fetchrow(
            Q.start_file,
            run_id,
            source_path,
            size_bytes,
            mtime_ns,
            sha256,
            owner_id,
            display_name,
        )
        return FileProgress.from_row(row)

    async def set_file_upload(self, run_id: str, source_path: str, upload_id: str) -> None:
        await self.pool.execute(Q.set_file_upload, run_id, source_path, upload_id)

    async def file_done(
        self, run_id: str, source_path: str, *, file_id: str, version_id: str, sha256: str
    ) -> None:
        await self.pool.execute(Q.file_done, run_id, source_path, file_id, version_id, sha256)

    async def file_failed(self, run_id: str, source_path: str, error: str) -> None:
        await self.pool.execute(Q.file_failed, run_id, source_path, error[:2000])

    async def record_failure(
        self,
        run_id: str,
        source_path: str,
        *,
        size_bytes: int,
        mtime_ns: int,
        owner_id: str,
        display_name: str,
        error: str,
    ) -> None:
        await self.pool.execute(
            Q.record_failure,
            run_id,
            source_path,
            size_bytes,
            mtime_ns,
            owner_id,
            display_name,
            error[:2000],
        )

    async def run_files(self, run_id: str) -> list[FileProgress]:
        rows = await self.pool.fetch(Q.run_files, run_id, idempotent=True)
        return [FileProgress.from_row(r) for r in rows]

    async def delete_run_files(self, run_id: str) -> None:
        await self.pool.execute(Q.delete_run_files, run_id)

    async def file_owned_by_other_run(self, run_id: str, file_id: str) -> bool:
        return bool(
            await self.pool.fetchval(Q.file_owned_by_other_run, run_id, file_id, idempotent=True)
        )

    # --- users map ---------------------------------------------------------------------

    async def user_mappings(self, legacy_ids: Sequence[str]) -> dict[str, UserMapping]:
        rows = await self.pool.fetch(Q.get_user_mappings, list(legacy_ids), idempotent=True)
        return {r["legacy_id"]: UserMapping.from_row(r) for r in rows}

    async def claim_user(
        self,
        legacy_id: str,
        email: str,
        *,
        needs_password_reset: bool,
        legacy_create_time: datetime | None,
    ) -> UserMapping | None:
        """Mark ``legacy_id`` as being imported; None when it is already done."""
        row = await self.pool.fetchrow(
            Q.claim_user_mapping, legacy_id, email, needs_password_reset, legacy_create_time
        )
        return None if row is None else UserMapping.from_row(row)

    async def finish_user(self, legacy_id: str, user_id: str) -> None:
        await self.pool.execute(Q.finish_user_mapping, legacy_id, user_id)

    async def drop_pending_user(self, legacy_id: str) -> None:
        await self.pool.execute(Q.drop_user_mapping, legacy_id)

    async def user_ids_of_legacy(self, legacy_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.pool.fetch(Q.user_ids_of_legacy, list(legacy_ids), idempotent=True)
        return {r["legacy_id"]: r["user_id"] for r in rows}

    # --- jobs map ----------------------------------------------------------------------

    async def map_jobs(
        self, rows: Sequence[tuple[str, uuid.UUID | None, str, datetime | None]]
    ) -> None:
        """(legacy id, job id or None when not moved, legacy state, legacy created_at)."""
        if rows:
            await self.pool.execute(
                Q.insert_job_mappings,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            )

    async def job_mappings(self, legacy_ids: Sequence[str]) -> dict[str, JobMapping]:
        rows = await self.pool.fetch(Q.get_job_mappings, list(legacy_ids), idempotent=True)
        return {r["legacy_id"]: JobMapping.from_row(r) for r in rows}

    # --- rejects and checkpoints -------------------------------------------------------

    async def reject(
        self, source: str, key: str, kind: RejectKind, reason: str, detail: str = ""
    ) -> None:
        await self.pool.execute(Q.upsert_reject, source, key, kind, reason, detail[:2000])

    async def clear_rejects(self, source: str, keys: Sequence[str]) -> None:
        if keys:
            await self.pool.execute(Q.delete_rejects, source, list(keys))

    async def rejects(self, source: str) -> list[Reject]:
        rows = await self.pool.fetch(Q.list_rejects, source, idempotent=True)
        return [Reject.from_row(r) for r in rows]

    async def checkpoint(self, source: str, phase: Phase) -> Checkpoint | None:
        row = await self.pool.fetchrow(Q.get_checkpoint, source, phase, idempotent=True)
        return None if row is None else Checkpoint.from_row(row)

    async def save_checkpoint(
        self, source: str, phase: Phase, cursor: str, *, done: bool, records: int
    ) -> None:
        await self.pool.execute(Q.save_checkpoint, source, phase, cursor, done, records)

    async def reset_checkpoints(self, source: str) -> None:
        await self.pool.execute(Q.reset_checkpoints, source)
