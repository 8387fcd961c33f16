"""The only code of the files service that runs SQL; returns frozen domain models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg

from common.db import PooledConnection, Queries, SuitePool, as_suite_pool
from common.errors import Aborted
from services.files.models import (
    CommittedObject,
    FileRecord,
    FileShare,
    FileVersion,
    NewUpload,
    ShareRole,
    UploadPart,
    UploadSession,
    UploadState,
    Usage,
)

Q = Queries(Path(__file__).parent / "sql" / "queries.sql")

Cursor = tuple[datetime, str]


class StreamSuperseded(Aborted):
    """Another stream took over this upload session; this one stops."""

    default_reason = "UPLOAD_SUPERSEDED"


class FileRepository:
    """Every statement goes through ``SuitePool`` (breaker, time bound); reads are declared
    ``idempotent`` so that a dead pooled connection is retried once on a fresh one."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    # --- upload sessions ---------------------------------------------------------------

    async def create_upload(self, new: NewUpload) -> UploadSession:
        row = await self.pool.fetchrow(
            Q.insert_upload,
            new.id,
            new.owner_id,
            new.file_id,
            new.parent_file_id,
            new.job_id,
            new.display_name,
            new.content_type,
            new.declared_size,
            new.client_sha256,
            new.labels,
            new.kind,
            new.via,
            new.bucket,
            new.object_key,
            new.part_size,
            new.stream_token,
        )
        return UploadSession.from_row(row)

    async def get_upload(self, upload_id: str) -> UploadSession | None:
        row = await self.pool.fetchrow(Q.get_upload, upload_id, idempotent=True)
        return None if row is None else UploadSession.from_row(row)

    async def claim_upload(self, upload_id: str, token: str, offset: int) -> UploadSession | None:
        row = await self.pool.fetchrow(Q.claim_upload, upload_id, token, offset)
        return None if row is None else UploadSession.from_row(row)

    async def set_s3_upload_id(self, upload_id: str, token: str, s3_upload_id: str) -> None:
        if await self.pool.fetchval(Q.set_s3_upload_id, upload_id, token, s3_upload_id) is None:
            raise StreamSuperseded(metadata={"upload": f"uploads/{upload_id}"})

    async def record_part(
        self, upload_id: str, token: str, part: UploadPart, committed_bytes: int
    ) -> None:
        done = await self.pool.fetchval(
            Q.record_part,
            upload_id,
            part.part_number,
            part.etag,
            part.size_bytes,
            committed_bytes,
            token,
        )
        if done is None:
            raise StreamSuperseded(metadata={"upload": f"uploads/{upload_id}"})

    async def advance_committed(self, upload_id: str, token: str, committed_bytes: int) -> None:
        done = await self.pool.fetchval(Q.advance_committed, upload_id, token, committed_bytes)
        if done is None:
            raise StreamSuperseded(metadata={"upload": f"uploads/{upload_id}"})

    async def list_parts(self, upload_id: str) -> list[UploadPart]:
        rows = await self.pool.fetch(Q.list_parts, upload_id, idempotent=True)
        return [UploadPart.from_row(r) for r in rows]

    async def finish_upload(
        self, upload_id: str, state: UploadState, error: str = ""
    ) -> UploadSession | None:
        row = await self.pool.fetchrow(Q.finish_upload, upload_id, state, error)
        return None if row is None else UploadSession.from_row(row)

    async def idle_uploads(self, before: datetime, limit: int = 500) -> list[UploadSession]:
        rows = await self.pool.fetch(Q.idle_uploads, before, limit, idempotent=True)
        return [UploadSession.from_row(r) for r in rows]

    async def known_s3_uploads(self, s3_upload_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(Q.known_s3_uploads, s3_upload_ids, idempotent=True)
        return {r["s3_upload_id"] for r in rows}

    async def active_uploads_of_user(self, user_id: str) -> list[UploadSession]:
        rows = await self.pool.fetch(Q.active_uploads_of_user, user_id, idempotent=True)
        return [UploadSession.from_row(r) for r in rows]

    async def commit_upload(self, session: UploadSession, obj: CommittedObject) -> FileRecord:
        """Record the verified object as a new file or a new version, and close the session."""

        async def commit(conn: PooledConnection) -> FileRecord:
            finished = await conn.fetchrow(Q.complete_upload, session.id, obj.size_bytes)
            if finished is None:
                raise StreamSuperseded(
                    "the upload session is no longer active", metadata={"upload": session.name}
                )
            if session.parent_file_id is None:
                row = await conn.fetchrow(
                    Q.insert_file,
                    session.file_id,
                    session.owner_id,
                    session.job_id,
                    session.display_name,
                    session.content_type,
                    obj.size_bytes,
                    obj.sha256,
                    session.bucket,
                    session.object_key,
                    obj.version_id,
                    obj.etag,
                    session.labels,
                    session.kind,
                )
            else:
                row = await conn.fetchrow(
                    Q.set_current_version,
                    session.file_id,
                    obj.version_id,
                    obj.etag,
                    obj.size_bytes,
                    obj.sha256,
                    session.content_type,
                )
                if row is None:
                    raise Aborted("the file was purged during the upload", reason="FILE_PURGED")
            await conn.execute(
                Q.insert_version,
                session.file_id,
                obj.version_id,
                obj.size_bytes,
                obj.sha256,
                obj.etag,
                session.content_type,
            )
            return FileRecord.from_row(row)

        return await self.pool.transaction(commit, what="commit_upload")

    # --- files -------------------------------------------------------------------------

    async def get_file(self, file_id: str) -> FileRecord | None:
        row = await self.pool.fetchrow(Q.get_file, file_id, idempotent=True)
        return None if row is None else FileRecord.from_row(row)

    async def recent_objects(self, limit: int) -> tuple[list[tuple[str, str, str, str]], int]:
        """``(file id, bucket, key, version id)`` of the newest ``limit`` live files, and how
        many live files there are in all."""
        rows = await self.pool.fetch(Q.recent_objects, limit, idempotent=True)
        total = int(rows[0]["total"]) if rows else 0
        found = [(r["id"], r["bucket"], r["object_key"], r["version_id"]) for r in rows]
        return found, total

    async def share_role(self, file_id: str, user_id: str) -> ShareRole | None:
        role = await self.pool.fetchval(Q.get_share_role, file_id, user_id, idempotent=True)
        return role  # type: ignore[no-any-return]

    async def list_files(
        self,
        owner_id: str,
        *,
        job_id: str | None,
        content_type_prefix: str,
        show_deleted: bool,
        after: Cursor | None,
        limit: int,
    ) -> list[FileRecord]:
        rows = await self.pool.fetch(
            Q.list_files,
            owner_id,
            job_id,
            content_type_prefix,
            show_deleted,
            after[0] if after else None,
            after[1] if after else "",
            limit,
            idempotent=True,
        )
        return [FileRecord.from_row(r) for r in rows]

    async def update_file(
        self, file_id: str, display_name: str, labels: dict[str, str]
    ) -> FileRecord | None:
        row = await self.pool.fetchrow(Q.update_file, file_id, display_name, labels)
        return None if row is None else FileRecord.from_row(row)

    async def soft_delete_file(self, file_id: str) -> FileRecord | None:
        row = await self.pool.fetchrow(Q.soft_delete_file, file_id)
        return None if row is None else FileRecord.from_row(row)

    async def purge_file(self, file_id: str) -> bool:
        return await self.pool.fetchval(Q.purge_file, file_id) is not None

    async def set_current_version(
        self, file_id: str, version: FileVersion | CommittedObject, content_type: str
    ) -> FileRecord:
        async def restore(conn: PooledConnection) -> FileRecord:
            row = await conn.fetchrow(
                Q.set_current_version,
                file_id,
                version.version_id,
                version.etag,
                version.size_bytes,
                version.sha256,
                content_type,
            )
            await conn.execute(
                Q.insert_version,
                file_id,
                version.version_id,
                version.size_bytes,
                version.sha256,
                version.etag,
                content_type,
            )
            return FileRecord.from_row(row)

        return await self.pool.transaction(restore, what="set_current_version")

    # --- versions ----------------------------------------------------------------------

    async def list_versions(
        self, file_id: str, *, after: Cursor | None, limit: int
    ) -> list[FileVersion]:
        rows = await self.pool.fetch(
            Q.list_versions,
            file_id,
            after[0] if after else None,
            after[1] if after else "",
            limit,
            idempotent=True,
        )
        return [FileVersion.from_row(r) for r in rows]

    async def get_version(self, file_id: str, version_id: str) -> FileVersion | None:
        row = await self.pool.fetchrow(Q.get_version, file_id, version_id, idempotent=True)
        return None if row is None else FileVersion.from_row(row)

    async def version_ids(self, file_id: str) -> set[str]:
        rows = await self.pool.fetch(Q.version_ids, file_id, idempotent=True)
        return {r["version_id"] for r in rows}

    # --- shares ------------------------------------------------------------------------

    async def share(self, file_id: str, user_id: str, role: ShareRole) -> FileShare:
        row = await self.pool.fetchrow(Q.upsert_share, file_id, user_id, role)
        return FileShare.from_row(row)

    async def unshare(self, file_id: str, user_id: str) -> bool:
        return await self.pool.fetchval(Q.delete_share, file_id, user_id) is not None

    async def list_shares(self, file_id: str) -> list[FileShare]:
        rows = await self.pool.fetch(Q.list_shares, file_id, idempotent=True)
        return [FileShare.from_row(r) for r in rows]

    # --- users -------------------------------------------------------------------------

    async def usage(self, user_id: str) -> Usage:
        row = await self.pool.fetchrow(Q.usage, user_id, idempotent=True)
        return Usage(user_id=user_id, file_count=row["file_count"], total_bytes=row["total_bytes"])

    async def user_files(self, user_id: str) -> list[FileRecord]:
        rows = await self.pool.fetch(Q.user_files, user_id, idempotent=True)
        return [FileRecord.from_row(r) for r in rows]

    async def purge_user_files(self, user_id: str) -> int:
        return int(await self.pool.fetchval(Q.purge_user_files, user_id, cap=self.pool.long_cap))
