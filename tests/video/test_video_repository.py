"""The video tables and repository against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from common.errors import NotFound
from services.files.video.models import ProcessingState, Thumbnail, VideoMetadata
from services.files.video.repository import StaleJob, VideoRepository

META = VideoMetadata(
    duration_seconds=2.0,
    container="mov,mp4,m4a,3gp,3g2,mj2",
    video_codec="h264",
    width=320,
    height=240,
    frame_rate=25.0,
    bit_rate=40_000,
)


async def insert_file(pool: asyncpg.Pool, file_id: str, owner: str = "alice") -> None:
    await pool.execute(
        """INSERT INTO files.files (id, owner_id, display_name, content_type, size_bytes, sha256,
               bucket, object_key, version_id, etag, kind)
           VALUES ($1, $2, 'a.mp4', 'video/mp4', 10, 'ab', 'b', $3, 'v1', 'e', 'video')""",
        file_id,
        owner,
        f"users/{owner}/{file_id}/content",
    )


def thumb(index: int) -> Thumbnail:
    return Thumbnail(
        index=index,
        time_seconds=index,
        bucket="b",
        key=f"users/alice/f1/thumbnails/{index}.jpg",
        width=32,
        height=24,
        size_bytes=100,
    )


async def test_a_new_version_starts_processing_over(pool: asyncpg.Pool) -> None:
    repo = VideoRepository(pool)
    await insert_file(pool, "f1")
    await repo.register_video("f1")
    await repo.set_probe_job("f1", "jobs/p1")
    await repo.set_probe_job("f1", "jobs/ignored")  # only fills an empty slot
    done = await repo.record_probe("f1", "jobs/p1", META, None)
    assert done.probe.state == ProcessingState.SUCCEEDED and done.metadata == META
    await repo.record_thumbnails("f1", "jobs/t1", [thumb(0), thumb(1)], None)

    again = await repo.register_video("f1")
    assert again.probe.state == ProcessingState.PENDING and again.probe.job is None
    assert again.metadata is None
    assert again.thumbnail_step.state == ProcessingState.PENDING
    # Thumbnails of the old version stay visible until the new set replaces them.
    assert [t.index for t in again.thumbnails] == [0, 1]


async def test_reports_from_a_superseded_job_are_refused(pool: asyncpg.Pool) -> None:
    repo = VideoRepository(pool)
    await insert_file(pool, "f1")
    await repo.register_video("f1")
    await repo.set_thumbnail_job("f1", "jobs/t1")
    with pytest.raises(StaleJob):
        await repo.record_thumbnails("f1", "jobs/t0", [thumb(0)], None)
    video = await repo.record_thumbnails("f1", "jobs/t1", [], "boom")
    assert video.thumbnail_step.state == ProcessingState.FAILED
    assert video.thumbnail_step.error == "boom"
    await repo.set_probe_job("f1", "jobs/p1")
    with pytest.raises(StaleJob):
        await repo.record_probe("f1", "jobs/p9", None, "late")
    assert (await repo.get_video("f1")).probe.state == ProcessingState.PENDING


async def test_unknown_files_and_purged_files(pool: asyncpg.Pool) -> None:
    repo = VideoRepository(pool)
    with pytest.raises(NotFound):
        await repo.register_video("nope")
    with pytest.raises(NotFound):
        await repo.get_video("nope")
    await insert_file(pool, "f1")
    await repo.register_video("f1")
    await repo.record_thumbnails("f1", "jobs/t1", [thumb(0)], None)
    await pool.execute("DELETE FROM files.files WHERE id = 'f1'")
    assert await pool.fetchval("SELECT count(*) FROM files.videos") == 0
    assert await pool.fetchval("SELECT count(*) FROM files.video_thumbnails") == 0


async def test_soft_deleted_files_hide_their_video(pool: asyncpg.Pool) -> None:
    repo = VideoRepository(pool)
    await insert_file(pool, "f1")
    await repo.register_video("f1")
    await pool.execute("UPDATE files.files SET delete_time = now() WHERE id = 'f1'")
    with pytest.raises(NotFound):
        await repo.get_video("f1")
    assert await repo.list_videos("alice", 10, None) == []
