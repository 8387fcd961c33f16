"""The only code that runs the video SQL; returns frozen domain models.

Until the files service exposes sharing to this part, access is decided from the
``files.files.owner_id`` column, read here directly (see docs/video.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
from pydantic import BaseModel, ConfigDict

from common.db import PooledConnection, Queries, SuitePool, as_suite_pool
from common.errors import FailedPrecondition, NotFound
from services.files.video.models import (
    ProcessingState,
    ProcessingStep,
    Thumbnail,
    Video,
    VideoMetadata,
)

Q = Queries(Path(__file__).parent / "sql" / "queries.sql")


class VideoCursor(BaseModel):
    """Position after the last video of a page (keyset on file create time and id)."""

    model_config = ConfigDict(frozen=True)

    create_time: datetime
    file_id: str


class StaleJob(FailedPrecondition):
    """Another job has taken over this step; the report of this one is ignored."""

    default_reason = "STALE_JOB"


def _metadata(row: asyncpg.Record) -> VideoMetadata | None:
    if row["probe_state"] != ProcessingState.SUCCEEDED or row["duration_seconds"] is None:
        return None
    return VideoMetadata(
        duration_seconds=row["duration_seconds"],
        container=row["container"],
        video_codec=row["video_codec"],
        audio_codec=row["audio_codec"] or "",
        width=row["width"],
        height=row["height"],
        frame_rate=row["frame_rate"],
        bit_rate=row["bit_rate"],
        rotation_degrees=row["rotation_degrees"],
    )


def _step(row: asyncpg.Record, prefix: str) -> ProcessingStep:
    return ProcessingStep(
        state=ProcessingState(row[f"{prefix}_state"]),
        job=row[f"{prefix}_job"],
        error=row[f"{prefix}_error"],
        update_time=row[f"{prefix}_update_time"],
    )


def _thumbnail(row: asyncpg.Record) -> Thumbnail:
    return Thumbnail(
        index=row["index"],
        time_seconds=row["time_seconds"],
        bucket=row["bucket"],
        key=row["object_key"],
        version_id=row["version_id"],
        width=row["width"],
        height=row["height"],
        size_bytes=row["size_bytes"],
    )


def _video(row: asyncpg.Record, thumbnails: Sequence[Thumbnail]) -> Video:
    return Video(
        file_id=row["file_id"],
        owner_id=row["owner_id"],
        job_id=row["job_id"],
        display_name=row["display_name"],
        content_type=row["content_type"],
        size_bytes=row["size_bytes"],
        bucket=row["bucket"],
        object_key=row["object_key"],
        version_id=row["version_id"],
        metadata=_metadata(row),
        probe=_step(row, "probe"),
        thumbnail_step=_step(row, "thumbnail"),
        thumbnails=tuple(thumbnails),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class VideoRepository:
    """Every statement goes through ``SuitePool`` (breaker, time bound); reads are declared
    ``idempotent`` so that a dead pooled connection is retried once on a fresh one."""

    def __init__(self, pool: asyncpg.Pool | SuitePool) -> None:
        self.pool = as_suite_pool(pool)

    async def get_video(self, file_id: str, conn: PooledConnection | None = None) -> Video:
        if conn is None:
            row = await self.pool.fetchrow(Q.get_video, file_id, idempotent=True)
        else:
            row = await conn.fetchrow(Q.get_video, file_id)
        if row is None:
            raise NotFound(f"video videos/{file_id} does not exist", metadata={"video": file_id})
        if conn is None:
            thumbs = await self.pool.fetch(Q.list_thumbnails, [file_id], idempotent=True)
        else:
            thumbs = await conn.fetch(Q.list_thumbnails, [file_id])
        return _video(row, [_thumbnail(t) for t in thumbs])

    async def list_videos(
        self, owner_id: str, limit: int, after: VideoCursor | None
    ) -> list[Video]:
        rows = await self.pool.fetch(
            Q.list_videos,
            owner_id,
            after.create_time if after else None,
            after.file_id if after else None,
            limit,
            idempotent=True,
        )
        thumbs = await self.pool.fetch(
            Q.list_thumbnails, [r["file_id"] for r in rows], idempotent=True
        )
        by_file: dict[str, list[Thumbnail]] = {}
        for t in thumbs:
            by_file.setdefault(t["file_id"], []).append(_thumbnail(t))
        return [_video(r, by_file.get(r["file_id"], [])) for r in rows]

    async def register_video(self, file_id: str) -> Video:
        """Start (or restart, for a new version) processing of a committed video file."""
        try:
            await self.pool.execute(Q.register_video, file_id)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"file files/{file_id} does not exist") from None
        return await self.get_video(file_id)

    async def set_probe_job(self, file_id: str, job: str) -> None:
        await self.pool.execute(Q.set_probe_job, file_id, job)

    async def restart_thumbnails(self, file_id: str) -> None:
        await self.pool.execute(Q.restart_thumbnails, file_id)

    async def set_thumbnail_job(self, file_id: str, job: str) -> None:
        await self.pool.execute(Q.set_thumbnail_job, file_id, job)

    async def fail_unscheduled_steps(self, file_id: str, error: str) -> None:
        """Mark PENDING steps without a job FAILED (their job could not be enqueued)."""
        await self.pool.execute(Q.fail_unscheduled_steps, file_id, error)

    async def record_probe(
        self, file_id: str, job: str, metadata: VideoMetadata | None, error: str | None
    ) -> Video:
        async def record(conn: PooledConnection) -> Video:
            await self.get_video(file_id, conn)  # NOT_FOUND first
            if metadata is not None:
                status = await conn.execute(
                    Q.record_probe_success,
                    file_id,
                    job,
                    metadata.duration_seconds,
                    metadata.container,
                    metadata.video_codec,
                    metadata.audio_codec,
                    metadata.width,
                    metadata.height,
                    metadata.frame_rate,
                    metadata.bit_rate,
                    metadata.rotation_degrees,
                )
            else:
                status = await conn.execute(Q.record_probe_failure, file_id, job, error)
            if status.endswith(" 0"):
                raise StaleJob(
                    f"{job} is not the current probe job of videos/{file_id}",
                    metadata={"job": job},
                )
            return await self.get_video(file_id, conn)

        return await self.pool.transaction(record, what="record_probe")

    async def record_thumbnails(
        self, file_id: str, job: str, thumbnails: Sequence[Thumbnail], error: str | None
    ) -> Video:
        state = ProcessingState.FAILED if error else ProcessingState.SUCCEEDED

        async def record(conn: PooledConnection) -> Video:
            await self.get_video(file_id, conn)
            status = await conn.execute(
                Q.record_thumbnails_state, file_id, job, state.value, error or None
            )
            if status.endswith(" 0"):
                raise StaleJob(
                    f"{job} is not the current thumbnail job of videos/{file_id}",
                    metadata={"job": job},
                )
            if not error:
                await conn.execute(Q.delete_thumbnails, file_id)
                await conn.execute(
                    Q.insert_thumbnails,
                    file_id,
                    [t.index for t in thumbnails],
                    [t.time_seconds for t in thumbnails],
                    [t.bucket for t in thumbnails],
                    [t.key for t in thumbnails],
                    [t.version_id for t in thumbnails],
                    [t.width for t in thumbnails],
                    [t.height for t in thumbnails],
                    [t.size_bytes for t in thumbnails],
                )
            return await self.get_video(file_id, conn)

        return await self.pool.transaction(record, what="record_thumbnails")
