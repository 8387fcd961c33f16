"""The whole suite in one process, as `make run` starts it: real users authentication, the
jobs queue with the embedded worker, files in S3 (moto over HTTP) and video processing.

Flow: a user uploads a video through VideoService.UploadVideo; the files service enqueues
`video.probe` and `video.thumbnail` as that user; the worker (authenticated as a service
account) probes the object with ranged reads and stores thumbnails; GetVideo shows the
metadata and presigned thumbnail URLs that serve real JPEGs. Then GetUserStats gathers the
user's jobs and files from the other services, and DeleteUser purges the user's data
through a `users.purge` job.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import grpc
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)
from mediagrid.users.v1 import user_service_pb2 as users_pb2
from mediagrid.users.v1 import user_service_pb2_grpc as users_pb2_grpc
from PIL import Image

from services.jobs.worker.embedded import embedded_worker
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.e2e.e2e_support import SUCCEEDED, eventually, fetch, upload_requests
from tests.support.auth import bearer
from tests.video.clips import make_clip


async def test_video_upload_is_processed_end_to_end_and_purged_with_its_owner(
    suite: Any,
) -> None:
    server, ctx, channel = await suite("all", video_thumbnail_times_seconds=[0.0, 1.0])
    repository = UserRepository(ctx.pool)
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    owner = await repository.create_user(
        email="owner@example.com", display_name="Owner", role="user", password_hash=None
    )
    admin = await repository.create_user(
        email="root@example.com", display_name="Root", role="admin", password_hash=None
    )
    owner_token, _ = await sessions.open_session(owner.id)
    admin_token, _ = await sessions.open_session(admin.id)
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    files = file_service_pb2_grpc.FileServiceStub(channel)
    users = users_pb2_grpc.UserServiceStub(channel)
    clip = make_clip(seconds=2.0, fps=25, width=320, height=240)

    # Without a token the upload is refused before anything is stored.
    anonymous = videos.UploadVideo(upload_requests(clip))
    try:
        async for _ in anonymous:
            pass
        raise AssertionError("an anonymous upload was accepted")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED

    async with embedded_worker(ctx.settings, server, ctx):
        committed: file_pb2.File | None = None
        async for response in videos.UploadVideo(
            upload_requests(clip), metadata=bearer(owner_token)
        ):
            if response.WhichOneof("payload") == "file":
                committed = response.file
        assert committed is not None
        assert committed.size_bytes == len(clip)
        assert committed.owner == f"users/{owner.id}"
        video_name = "videos/" + committed.name.removeprefix("files/")

        async def processed() -> video_service_pb2.Video | None:
            video = (
                await videos.GetVideo(
                    video_service_pb2.GetVideoRequest(name=video_name), metadata=bearer(owner_token)
                )
            ).video
            failed = video_service_pb2.PROCESSING_STATE_FAILED
            assert failed not in (video.probe.state, video.thumbnail_step.state), video
            done = video.probe.state == SUCCEEDED and video.thumbnail_step.state == SUCCEEDED
            return video if done else None

        video = await eventually(processed, what="the probe and thumbnail jobs")
        meta = video.metadata
        assert (meta.width, meta.height) == (320, 240)
        assert abs(meta.frame_rate - 25) < 0.01
        assert abs(meta.duration.ToTimedelta().total_seconds() - 2.0) < 0.1
        assert meta.video_codec == "h264"
        assert len(video.thumbnails) == 2
        for thumbnail in video.thumbnails:
            picture = Image.open(io.BytesIO(await asyncio.to_thread(fetch, thumbnail.url)))
            assert picture.format == "JPEG"
            assert picture.width == thumbnail.width == ctx.settings.video_thumbnail_width

        # GetUserStats asks the jobs and files services, forwarding the caller's token. The
        # handlers record their step before they return; the worker acknowledges the jobs
        # after that, in batches, so both jobs count as succeeded a moment later.
        async def both_jobs_succeeded() -> users_pb2.GetUserStatsResponse | None:
            stats = await users.GetUserStats(
                users_pb2.GetUserStatsRequest(name="users/me"), metadata=bearer(owner_token)
            )
            assert stats.file_count == 1
            assert stats.file_bytes == len(clip)
            return stats if stats.job_counts["JOB_STATE_SUCCEEDED"] == 2 else None

        stats = await eventually(both_jobs_succeeded, what="both jobs acknowledged")
        assert {state: n for state, n in stats.job_counts.items() if n} == {
            "JOB_STATE_SUCCEEDED": 2
        }

        # Deleting the user removes their files through a users.purge job run by the worker.
        await users.DeleteUser(
            users_pb2.DeleteUserRequest(name=f"users/{owner.id}"), metadata=bearer(admin_token)
        )

        async def purged() -> bool:
            usage = await files.GetUserUsage(
                file_service_pb2.GetUserUsageRequest(user=f"users/{owner.id}"),
                metadata=bearer(admin_token),
            )
            return usage.file_count == 0

        await eventually(purged, what="the users.purge job")

    # The deleted user's session no longer authenticates.
    try:
        await videos.GetVideo(
            video_service_pb2.GetVideoRequest(name=video_name), metadata=bearer(owner_token)
        )
        raise AssertionError("a deleted user's token still works")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
