"""Shared steps of the end-to-end tests: a user's token, a video uploaded and processed."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mediagrid.files.v1 import file_pb2, video_service_pb2, video_service_pb2_grpc

from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.support.auth import bearer
from tests.video.clips import make_clip

SUCCEEDED = video_service_pb2.PROCESSING_STATE_SUCCEEDED
CHUNK = 256 * 1024


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        body: bytes = reply.read()
    return body


async def eventually(check: Callable[[], Awaitable[Any]], *, what: str, limit: float = 90) -> Any:
    """Poll ``check`` until it returns something truthy (bounded; no timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def upload_requests(data: bytes) -> AsyncIterator[video_service_pb2.UploadVideoRequest]:
    header = file_pb2.UploadHeader(
        display_name="holiday.mp4", content_type="video/mp4", size_bytes=len(data)
    )
    yield video_service_pb2.UploadVideoRequest(header=header)
    for offset in range(0, len(data), CHUNK):
        yield video_service_pb2.UploadVideoRequest(data=data[offset : offset + CHUNK])


async def user_token(ctx: Any, email: str) -> str:
    """A new user's session token (straight through the users repository)."""
    repository = UserRepository(ctx.pool)
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    user = await repository.create_user(
        email=email, display_name=email.split("@")[0], role="user", password_hash=None
    )
    token, _ = await sessions.open_session(user.id)
    return str(token)


async def processed_video(videos: video_service_pb2_grpc.VideoServiceStub, token: str) -> str:
    """Upload a one-second clip and wait until its probe and thumbnail jobs succeeded (a
    worker must run); returns the video's name."""
    committed = None
    async for response in videos.UploadVideo(
        upload_requests(make_clip(seconds=1.0, fps=10, width=160, height=120)),
        metadata=bearer(token),
    ):
        if response.WhichOneof("payload") == "file":
            committed = response.file
    assert committed is not None
    name = "videos/" + committed.name.removeprefix("files/")

    async def processed() -> bool:
        video = (
            await videos.GetVideo(
                video_service_pb2.GetVideoRequest(name=name), metadata=bearer(token)
            )
        ).video
        return bool(video.probe.state == SUCCEEDED and video.thumbnail_step.state == SUCCEEDED)

    await eventually(processed, what="the probe and thumbnail jobs")
    return name
