"""VideoService with S3 down (moto behind a fault proxy): the video reads and stream URLs
answer from PostgreSQL, while UploadVideo fails UNAVAILABLE within its bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from mediagrid.files.v1 import file_pb2, video_service_pb2, video_service_pb2_grpc

from common.grpc_errors import error_info, retry_info
from tests.files.conftest import TRANSFER_BOUND, behind, s3_proxy  # noqa: F401
from tests.support.auth import bearer
from tests.support.people import start_all
from tests.support.proxy import TcpProxy
from tests.video.clips import make_clip

SLACK = 5.0


def requests(data: bytes) -> list[video_service_pb2.UploadVideoRequest]:
    header = file_pb2.UploadHeader(display_name="clip.mp4", content_type="video/mp4")
    return [
        video_service_pb2.UploadVideoRequest(header=header),
        video_service_pb2.UploadVideoRequest(data=data),
    ]


async def upload(videos: video_service_pb2_grpc.VideoServiceStub, token: str, data: bytes) -> str:
    name = ""
    async for response in videos.UploadVideo(iter(requests(data)), metadata=bearer(token)):
        if response.WhichOneof("payload") == "file":
            name = "videos/" + response.file.name.removeprefix("files/")
    return name


async def test_video_reads_answer_and_uploads_fail_fast_while_s3_is_down(
    suite: Any,
    s3_proxy: TcpProxy,  # noqa: F811
) -> None:
    people = await start_all(suite, "files", "jobs", "users", **behind(s3_proxy))
    alice, token = await people.add()
    videos = video_service_pb2_grpc.VideoServiceStub(people.channel)
    clip = make_clip(seconds=0.5)
    name = await upload(videos, token, clip)
    md = bearer(token)

    s3_proxy.pause()
    answered = {
        "GetVideo": await asyncio.wait_for(
            videos.GetVideo(video_service_pb2.GetVideoRequest(name=name), metadata=md), 5
        ),
        "ListVideos": await asyncio.wait_for(
            videos.ListVideos(video_service_pb2.ListVideosRequest(), metadata=md), 5
        ),
        "CreateStreamUrl": await asyncio.wait_for(
            videos.CreateStreamUrl(
                video_service_pb2.CreateStreamUrlRequest(name=name), metadata=md
            ),
            5,
        ),
    }
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upload(videos, token, clip)
    elapsed = time.monotonic() - started
    info = error_info(caught.value)
    print(
        f"video, S3 paused: {len(answered)} reads answered; UploadVideo "
        f"{caught.value.code().name} {info.reason if info else ''} after {elapsed:.1f}s"
    )
    s3_proxy.resume()
    assert answered["GetVideo"].video.name == name
    assert [v.name for v in answered["ListVideos"].videos] == [name]
    assert answered["CreateStreamUrl"].url
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info is not None and info.reason == "S3_UNAVAILABLE"
    assert retry_info(caught.value) is not None
    assert elapsed < TRANSFER_BOUND + SLACK
    assert alice.id
