"""VideoService RPCs: stream URLs, listing, upload validation and the access matrix."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.files.v1 import file_pb2, video_service_pb2

from common.grpc_errors import bad_request, error_info
from services.files.video.servicer import is_video_content_type
from tests.support.auth import bearer
from tests.video.clips import make_clip
from tests.video.conftest import VideoEnv, upload_stream


def http_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip(seconds=1.0)


async def test_stream_url_serves_http_range_requests(video_env: VideoEnv, clip: bytes) -> None:
    name = await video_env.upload(clip)
    response = await video_env.stub.CreateStreamUrl(
        video_service_pb2.CreateStreamUrlRequest(name=name, ttl=duration_pb2.Duration(seconds=120)),
        metadata=bearer("alice"),
    )
    query = urllib.parse.parse_qs(urllib.parse.urlparse(response.url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]
    assert "versionId" in query
    assert response.size_bytes == len(clip) and response.content_type == "video/mp4"
    status, headers, body = await asyncio.to_thread(
        http_get, response.url, {"Range": "bytes=100-1123"}
    )
    assert status == 206
    assert body == clip[100:1124]
    assert headers["content-range"] == f"bytes 100-1123/{len(clip)}"
    assert ("video.stream_url", name, {"ttl_seconds": "120"}) in video_env.activity.entries


async def test_stream_url_expiry_defaults_and_is_bounded(video_env: VideoEnv, clip: bytes) -> None:
    name = await video_env.upload(clip)
    settings = video_env.ctx.settings
    response = await video_env.stub.CreateStreamUrl(
        video_service_pb2.CreateStreamUrlRequest(name=name), metadata=bearer("alice")
    )
    expires = urllib.parse.parse_qs(urllib.parse.urlparse(response.url).query)["X-Amz-Expires"]
    assert expires == [str(settings.presign_default_seconds)]
    too_long = duration_pb2.Duration(seconds=settings.presign_max_seconds + 1)
    error = await failure(
        video_env.stub.CreateStreamUrl(
            video_service_pb2.CreateStreamUrlRequest(name=name, ttl=too_long),
            metadata=bearer("alice"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(error).field_violations[0].field == "ttl"


async def test_list_videos_pages_newest_first(video_env: VideoEnv, clip: bytes) -> None:
    names = [await video_env.upload(clip) for _ in range(3)]
    await video_env.upload(clip, token="bob")
    first = await video_env.stub.ListVideos(
        video_service_pb2.ListVideosRequest(page_size=2), metadata=bearer("alice")
    )
    assert [v.name for v in first.videos] == names[::-1][:2]
    assert first.next_page_token
    second = await video_env.stub.ListVideos(
        video_service_pb2.ListVideosRequest(page_size=2, page_token=first.next_page_token),
        metadata=bearer("alice"),
    )
    assert [v.name for v in second.videos] == names[:1]
    assert second.next_page_token == ""
    everything = await video_env.stub.ListVideos(
        video_service_pb2.ListVideosRequest(owner="users/alice"), metadata=bearer("admin")
    )
    assert len(everything.videos) == 3 and all(v.owner == "users/alice" for v in everything.videos)
    # A token from alice's listing is not valid for bob's.
    error = await failure(
        video_env.stub.ListVideos(
            video_service_pb2.ListVideosRequest(
                owner="users/bob", page_token=first.next_page_token
            ),
            metadata=bearer("admin"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    for bad in (
        video_service_pb2.ListVideosRequest(page_size=-1),
        video_service_pb2.ListVideosRequest(page_token="garbage!!"),
        video_service_pb2.ListVideosRequest(owner="alice"),
    ):
        error = await failure(video_env.stub.ListVideos(bad, metadata=bearer("alice")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def header(content_type: str) -> video_service_pb2.UploadVideoRequest:
    return video_service_pb2.UploadVideoRequest(
        header=file_pb2.UploadHeader(display_name="a.mp4", content_type=content_type)
    )


# Each stream ends with the message the server rejects, so no write races the server's
# answer (grpc.aio turns a write after the call ended into INTERNAL on the client side).
BAD_UPLOADS: dict[str, tuple[list[video_service_pb2.UploadVideoRequest], str]] = {
    "text": ([header("text/plain")], "NOT_A_VIDEO"),
    "bare-video": ([header("video/")], "NOT_A_VIDEO"),
    "empty-type": ([header("")], "NOT_A_VIDEO"),
    "no-header": ([], "HEADER_REQUIRED"),
    "data-first": ([video_service_pb2.UploadVideoRequest(data=b"abc")], "HEADER_REQUIRED"),
    "header-twice": (
        [
            header("video/mp4"),
            video_service_pb2.UploadVideoRequest(data=b"abc"),
            header("video/mp4"),
        ],
        "HEADER_REPEATED",
    ),
}


async def upload_failure(
    env: VideoEnv,
    messages: list[video_service_pb2.UploadVideoRequest],
    token: str | None = "alice",
    *,
    close: bool = True,
) -> grpc.aio.AioRpcError:
    call = env.stub.UploadVideo(metadata=bearer(token) if token else ())
    for message in messages:
        await call.write(message)
    if close and not messages:
        await call.done_writing()  # the server needs the end of the stream to decide
    # Read (not call.code()): the status arrives only after the responses before it.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


async def test_bad_upload_streams_are_invalid_and_commit_nothing(video_env: VideoEnv) -> None:
    for case, (messages, reason) in BAD_UPLOADS.items():
        error = await upload_failure(video_env, messages)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert error_info(error).reason == reason, case
    assert await video_env.ctx.pool.fetchval("SELECT count(*) FROM files.videos") == 0
    assert video_env.jobs.jobs == []


@given(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda prefix, tail: prefix + tail,
            st.sampled_from(["video/", "VIDEO/", "Video/", " video/", "videos/", "audio/", ""]),
            st.one_of(st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,20}", fullmatch=True), st.text()),
        ),
    )
)
def test_only_video_content_types_are_accepted(content_type: str) -> None:
    accepted = is_video_content_type(content_type)
    if accepted:
        assert content_type.lower().startswith("video/") and len(content_type) > len("video/")
        assert content_type.isprintable() and content_type == content_type.strip()
    if re.fullmatch(r"video/[a-z0-9][a-z0-9.+-]{0,20}", content_type, re.IGNORECASE):
        assert accepted  # a plain video/<subtype> is never refused


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("video/mp4", True),
        ("VIDEO/QuickTime", True),
        ("video/x-matroska", True),
        ("video/webm; codecs=vp9", True),
        ("audio/mp4", False),
        ("video", False),
        ("video/", False),
        ("videos/mp4", False),
        ("video/mp4\n", False),
        ("video/mp4\x00", False),
        (" video/mp4", False),
    ],
)
def test_video_content_type_examples(value: str, expected: bool) -> None:
    assert is_video_content_type(value) is expected


def current_job(env: VideoEnv, job_type: str) -> str:
    """The job that owns the step (reports from any other job are refused as stale)."""
    return env.jobs.of_type(job_type)[-1].name


Call = Callable[[VideoEnv, str, str], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "GetVideo": lambda env, name, token: env.stub.GetVideo(
        video_service_pb2.GetVideoRequest(name=name), metadata=bearer(token)
    ),
    "CreateStreamUrl": lambda env, name, token: env.stub.CreateStreamUrl(
        video_service_pb2.CreateStreamUrlRequest(name=name), metadata=bearer(token)
    ),
    "RegenerateThumbnails": lambda env, name, token: env.stub.RegenerateThumbnails(
        video_service_pb2.RegenerateThumbnailsRequest(name=name), metadata=bearer(token)
    ),
    "RecordVideoMetadata": lambda env, name, token: env.stub.RecordVideoMetadata(
        video_service_pb2.RecordVideoMetadataRequest(
            name=name, job=current_job(env, "video.probe"), error="broken"
        ),
        metadata=bearer(token),
    ),
    "RecordThumbnails": lambda env, name, token: env.stub.RecordThumbnails(
        video_service_pb2.RecordThumbnailsRequest(
            name=name, job=current_job(env, "video.thumbnail"), error="broken"
        ),
        metadata=bearer(token),
    ),
}
USER_RPCS = ["GetVideo", "CreateStreamUrl", "RegenerateThumbnails"]
SERVICE_RPCS = ["RecordVideoMetadata", "RecordThumbnails"]
OK, DENIED, MISSING = (
    grpc.StatusCode.OK,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
)


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


async def test_authorization_matrix(video_env: VideoEnv, clip: bytes) -> None:
    name = await video_env.upload(clip)
    missing = "videos/doesnotexist"
    user_rpc = {
        ("alice", name): OK,
        ("admin", name): OK,
        ("bob", name): DENIED,
        ("worker", name): OK,  # other services act on any file, as in the FileService
        ("bob", missing): DENIED,  # PERMISSION_DENIED before NOT_FOUND
        ("admin", missing): MISSING,
        ("nobody", name): grpc.StatusCode.UNAUTHENTICATED,
    }
    service_rpc = {
        ("alice", name): DENIED,
        ("admin", name): DENIED,
        ("bob", missing): DENIED,
        ("worker", name): OK,
        ("worker", missing): MISSING,
        ("nobody", name): grpc.StatusCode.UNAUTHENTICATED,
    }
    for rpc in USER_RPCS + SERVICE_RPCS:
        expected = user_rpc if rpc in USER_RPCS else service_rpc
        actual = {key: await outcome(CALLS[rpc](video_env, key[1], key[0])) for key in expected}
        assert actual == expected, rpc


async def test_shares_of_the_file_open_its_video(video_env: VideoEnv, clip: bytes) -> None:
    """The FileService's grants apply: a reader may look and stream, a writer may also
    regenerate thumbnails; the grant names one file, and it ends when unshared."""
    name = await video_env.upload(clip)
    other = await video_env.upload(clip)
    file_id = name.removeprefix("videos/")
    await video_env.ctx.pool.executemany(
        "INSERT INTO files.file_shares (file_id, user_id, role) VALUES ($1, $2, $3)",
        [(file_id, "bob", "reader"), (file_id, "carol", "writer")],
    )
    expected = {
        ("bob", name, "GetVideo"): OK,
        ("bob", name, "CreateStreamUrl"): OK,
        ("bob", name, "RegenerateThumbnails"): DENIED,
        ("carol", name, "GetVideo"): OK,
        ("carol", name, "CreateStreamUrl"): OK,
        ("carol", name, "RegenerateThumbnails"): OK,
        ("bob", other, "GetVideo"): DENIED,
        ("carol", other, "RegenerateThumbnails"): DENIED,
        ("carol", name, "RecordThumbnails"): DENIED,
    }
    actual = {key: await outcome(CALLS[key[2]](video_env, key[1], key[0])) for key in expected}
    assert actual == expected
    await video_env.ctx.pool.execute("DELETE FROM files.file_shares WHERE file_id = $1", file_id)
    assert await outcome(CALLS["GetVideo"](video_env, name, "bob")) == DENIED


async def test_list_videos_of_another_owner_is_denied(video_env: VideoEnv) -> None:
    error = await failure(
        video_env.stub.ListVideos(
            video_service_pb2.ListVideosRequest(owner="users/alice"), metadata=bearer("bob")
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_whole_non_video_stream_gets_the_real_status(video_env: VideoEnv) -> None:
    """The server drains what the client still sends, so it sees NOT_A_VIDEO, not INTERNAL."""
    call = video_env.stub.UploadVideo(
        upload_stream(b"%PDF-1.7" * 100_000, "application/pdf", chunk=32 * 1024),
        metadata=bearer("alice"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "NOT_A_VIDEO"


async def test_upload_needs_a_token(video_env: VideoEnv) -> None:
    # The interceptor answers before reading anything: send nothing, not even the end.
    error = await upload_failure(video_env, [], token=None, close=False)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_malformed_names_are_invalid(video_env: VideoEnv) -> None:
    for name in ["", "videos/", "videos/a/b", "users/x", "videos/../x", "videos/a\x00"]:
        error = await failure(
            video_env.stub.GetVideo(
                video_service_pb2.GetVideoRequest(name=name), metadata=bearer("alice")
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name


async def test_regenerate_thumbnails_reports_every_bad_field(
    video_env: VideoEnv, clip: bytes
) -> None:
    name = await video_env.upload(clip)
    error = await failure(
        video_env.stub.RegenerateThumbnails(
            video_service_pb2.RegenerateThumbnailsRequest(name=name, times_seconds=[-1.0], width=8),
            metadata=bearer("alice"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = bad_request(error)
    assert details is not None
    assert [(v.field, v.description) for v in details.field_violations] == [
        ("times_seconds", "each time must be between 0 and 86400"),
        ("width", "must be 0 (default) or between 16 and 3840"),
    ]


async def test_record_rejects_bad_results(video_env: VideoEnv, clip: bytes) -> None:
    name = await video_env.upload(clip)
    file_id = name.removeprefix("videos/")
    cases = [
        video_service_pb2.RecordVideoMetadataRequest(name=name, job="jobs/x"),
        video_service_pb2.RecordVideoMetadataRequest(name=name, job="nojob", error="e"),
        video_service_pb2.RecordVideoMetadataRequest(
            name=name, job="jobs/x", metadata=video_service_pb2.VideoMetadata(width=-5)
        ),
    ]
    for request in cases:
        error = await failure(
            video_env.stub.RecordVideoMetadata(request, metadata=bearer("worker"))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    outside = video_service_pb2.Thumbnail(
        index=0, width=10, height=10, key=f"users/bob/{file_id}/thumbnails/0.jpg"
    )
    error = await failure(
        video_env.stub.RecordThumbnails(
            video_service_pb2.RecordThumbnailsRequest(
                name=name, job="jobs/x", thumbnails=[outside]
            ),
            metadata=bearer("worker"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "thumbnails[0].key" in error.details()
