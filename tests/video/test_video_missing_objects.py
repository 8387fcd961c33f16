"""A video whose objects are gone from S3 (a wiped or restored store): no thumbnail URL is
minted for a thumbnail that is not stored, and no stream URL for a missing video."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mediagrid.files.v1 import video_pb2

from common.grpc_errors import error_info
from services.jobs.worker.api import HANDLERS
from tests.support.auth import bearer
from tests.support.object_store import ObjectStore
from tests.video.clips import make_clip
from tests.video.conftest import VideoEnv


async def get(env: VideoEnv, name: str) -> video_pb2.Video:
    response = await env.stub.GetVideo(
        video_pb2.GetVideoRequest(name=name), metadata=bearer("alice")
    )
    return response.video


async def test_no_url_for_a_missing_thumbnail_or_video(
    video_env: VideoEnv, object_store: ObjectStore
) -> None:
    name = await video_env.upload(make_clip(seconds=1.0, fps=10, width=160, height=120))
    (thumb_job,) = video_env.jobs.of_type("video.thumbnail")
    await HANDLERS["video.thumbnail"].function(video_env.job_context(thumb_job))
    video = await get(video_env, name)
    assert len(video.thumbnails) >= 2 and all(t.uri for t in video.thumbnails)

    s3 = object_store.client()
    bucket = video_env.ctx.settings.bucket("files")
    gone = video.thumbnails[0]
    await asyncio.to_thread(
        s3.delete_object, Bucket=bucket, Key=gone.key, VersionId=gone.version_id
    )
    video = await get(video_env, name)
    assert video.thumbnails[0].uri == "" and not video.thumbnails[0].HasField("expire_time")
    assert all(t.uri for t in video.thumbnails[1:])  # the stored ones keep theirs
    listed = await video_env.stub.ListVideos(
        video_pb2.ListVideosRequest(), metadata=bearer("alice")
    )
    assert [t.uri == "" for t in listed.videos[0].thumbnails] == [
        t.uri == "" for t in video.thumbnails
    ]

    stream = await video_env.stub.CreateStreamUrl(
        video_pb2.CreateStreamUrlRequest(name=name), metadata=bearer("alice")
    )
    assert stream.uri
    key = f"users/alice/{name.removeprefix('videos/')}/content"
    versions = await asyncio.to_thread(s3.list_object_versions, Bucket=bucket, Prefix=key)
    for version in versions["Versions"]:
        await asyncio.to_thread(
            s3.delete_object, Bucket=bucket, Key=key, VersionId=version["VersionId"]
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video_env.stub.CreateStreamUrl(
            video_pb2.CreateStreamUrlRequest(name=name), metadata=bearer("alice")
        )
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    info = error_info(caught.value)
    assert info is not None and info.reason == "OBJECT_MISSING"
