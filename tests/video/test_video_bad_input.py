"""Bad input to the VideoService: the edge's hygiene layer (NUL, Durations, NaN/Infinity)
and the video's own field rules (probe metadata bounds, stream URL TTL)."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.files.v1 import video_service_pb2

from common.errors import InvalidArgument
from common.grpc_errors import bad_request, error_info
from services.files.video import validation
from tests.common.hygiene_support import Case, check_cases, unary
from tests.support.auth import bearer
from tests.support.hypo import relaxed
from tests.video.clips import make_clip
from tests.video.conftest import VideoEnv

GOOD = {
    "duration_seconds": 12.5,
    "container": "mov,mp4,m4a,3gp,3g2,mj2",
    "video_codec": "h264",
    "audio_codec": "aac",
    "width": 1920,
    "height": 1080,
    "frame_rate": 29.97,
    "bit_rate": 4_000_000,
    "rotation_degrees": 90,
}


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip(seconds=1.0)


def _metadata(**changes: Any) -> video_service_pb2.VideoMetadata:
    values = {**GOOD, **changes}
    duration = values.pop("duration_seconds")
    message = video_service_pb2.VideoMetadata(**values)
    if isinstance(duration, duration_pb2.Duration):
        message.duration.CopyFrom(duration)
    else:
        message.duration.FromNanoseconds(round(duration * 1e9))
    return message


def _record(env: VideoEnv, name: str, job: str, metadata: video_service_pb2.VideoMetadata) -> Any:
    request = video_service_pb2.RecordVideoMetadataRequest(name=name, job=job, metadata=metadata)
    return unary(env.stub.RecordVideoMetadata, request, bearer("worker"))


async def test_hygiene_refuses_before_any_handler(
    video_env: VideoEnv, clip: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    name = await video_env.upload(clip)
    job = video_env.jobs.of_type("video.probe")[-1].name
    stub, alice = video_env.stub, bearer("alice")
    huge = duration_pb2.Duration(seconds=2**62)
    cases: list[Case] = [
        (
            "RecordVideoMetadata container NUL",
            _record(video_env, name, job, _metadata(container="mp4\x00")),
            "NUL_IN_STRING",
            "metadata.container",
        ),
        (
            "RecordVideoMetadata error NUL",
            unary(
                stub.RecordVideoMetadata,
                video_service_pb2.RecordVideoMetadataRequest(name=name, job=job, error="bad\x00"),
                bearer("worker"),
            ),
            "NUL_IN_STRING",
            "error",
        ),
        (
            "RecordVideoMetadata 2^62 s",
            _record(video_env, name, job, _metadata(duration_seconds=huge)),
            "DURATION_OUT_OF_RANGE",
            "metadata.duration",
        ),
        (
            "RecordVideoMetadata infinite frame rate",
            _record(video_env, name, job, _metadata(frame_rate=math.inf)),
            "NON_FINITE_NUMBER",
            "metadata.frame_rate",
        ),
        (
            "CreateStreamUrl ttl nanos 2e9",
            unary(
                stub.CreateStreamUrl,
                video_service_pb2.CreateStreamUrlRequest(
                    name=name, ttl=duration_pb2.Duration(nanos=2_000_000_000)
                ),
                alice,
            ),
            "DURATION_OUT_OF_RANGE",
            "ttl",
        ),
        (
            "RegenerateThumbnails NaN time",
            unary(
                stub.RegenerateThumbnails,
                video_service_pb2.RegenerateThumbnailsRequest(
                    name=name, times_seconds=[1.0, math.nan]
                ),
                alice,
            ),
            "NON_FINITE_NUMBER",
            "times_seconds[1]",
        ),
        (
            "ListVideos page_token NUL",
            unary(stub.ListVideos, video_service_pb2.ListVideosRequest(page_token="\x00"), alice),
            "NUL_IN_STRING",
            "page_token",
        ),
    ]
    await check_cases(cases, caplog)
    video = await stub.GetVideo(video_service_pb2.GetVideoRequest(name=name), metadata=alice)
    assert video.video.probe.state == video_service_pb2.PROCESSING_STATE_PENDING


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"duration_seconds": 31 * 24 * 3600}, ["metadata.duration"]),
        ({"duration_seconds": -1.0}, ["metadata.duration"]),
        ({"rotation_degrees": 45}, ["metadata.rotation_degrees"]),
        ({"rotation_degrees": 360}, ["metadata.rotation_degrees"]),
        ({"frame_rate": 1000.5}, ["metadata.frame_rate"]),
        ({"frame_rate": -25.0}, ["metadata.frame_rate"]),
        ({"width": 40_000, "height": -1}, ["metadata.width", "metadata.height"]),
        ({"bit_rate": 2**62}, ["metadata.bit_rate"]),
        ({"video_codec": "h264\n"}, ["metadata.video_codec"]),
        ({"container": "x" * 300}, ["metadata.container"]),
    ],
)
async def test_record_video_metadata_field_rules(
    video_env: VideoEnv, clip: bytes, changes: dict[str, Any], fields: list[str]
) -> None:
    name = await video_env.upload(clip)
    job = video_env.jobs.of_type("video.probe")[-1].name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _record(video_env, name, job, _metadata(**changes))()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = error_info(caught.value), bad_request(caught.value)
    assert info is not None and info.reason == "INVALID_VIDEO_METADATA"
    assert bad is not None and [v.field for v in bad.field_violations] == fields
    video = await video_env.stub.GetVideo(
        video_service_pb2.GetVideoRequest(name=name), metadata=bearer("alice")
    )
    assert video.video.probe.state == video_service_pb2.PROCESSING_STATE_PENDING


async def test_sane_metadata_is_recorded(video_env: VideoEnv, clip: bytes) -> None:
    name = await video_env.upload(clip)
    job = video_env.jobs.of_type("video.probe")[-1].name
    response = await _record(video_env, name, job, _metadata(frame_rate=0.0))()
    assert response.video.probe.state == video_service_pb2.PROCESSING_STATE_SUCCEEDED
    assert response.video.metadata.rotation_degrees == 90
    assert response.video.metadata.frame_rate == 0.0  # 0 = unknown rate


async def test_stream_ttl_above_the_maximum_is_invalid_ttl(
    video_env: VideoEnv, clip: bytes
) -> None:
    name = await video_env.upload(clip)
    maximum = video_env.ctx.settings.presign_max_seconds
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video_env.stub.CreateStreamUrl(
            video_service_pb2.CreateStreamUrlRequest(
                name=name, ttl=duration_pb2.Duration(seconds=maximum, nanos=1)
            ),
            metadata=bearer("alice"),
        )
    info = error_info(caught.value)
    assert info is not None and info.reason == "INVALID_TTL"


# --- the rules as properties -----------------------------------------------------------------

values = st.fixed_dictionaries(
    {
        "duration_seconds": st.floats(allow_nan=True, allow_infinity=True),
        "container": st.text(max_size=300),
        "video_codec": st.text(max_size=20),
        "audio_codec": st.text(max_size=20),
        "width": st.integers(-(2**31), 2**31 - 1),
        "height": st.integers(-(2**31), 2**31 - 1),
        "frame_rate": st.floats(allow_nan=True, allow_infinity=True),
        "bit_rate": st.integers(-(2**63), 2**63 - 1),
        "rotation_degrees": st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 90, 180, 270]),
    }
)


def _sane(v: dict[str, Any]) -> bool:
    names = (v["container"], v["video_codec"], v["audio_codec"])
    return (
        math.isfinite(v["duration_seconds"])
        and 0 <= v["duration_seconds"] <= 30 * 86400
        and math.isfinite(v["frame_rate"])
        and 0 <= v["frame_rate"] <= 1000
        and all(0 <= v[k] <= 32_768 for k in ("width", "height"))
        and 0 <= v["bit_rate"] <= 10**11
        and v["rotation_degrees"] in (0, 90, 180, 270)
        and all(
            len(n) <= 256 and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in n) for n in names
        )
    )


@relaxed(max_examples=300)
@given(v=values)
def test_video_metadata_accepts_exactly_the_sane_values(v: dict[str, Any]) -> None:
    try:
        meta = validation.video_metadata(v)
    except InvalidArgument as error:
        assert not _sane(v)
        assert error.reason == "INVALID_VIDEO_METADATA"
        assert error.violations and all(x.field.startswith("metadata.") for x in error.violations)
    else:
        assert _sane(v)
        assert meta.rotation_degrees in (0, 90, 180, 270)


@given(
    ttl=st.floats(allow_nan=True, allow_infinity=True),
    maximum=st.integers(1, 7 * 86400),
    default=st.integers(1, 7 * 86400),
)
def test_stream_ttl_is_within_one_and_the_maximum(ttl: float, maximum: int, default: int) -> None:
    try:
        seconds = validation.stream_ttl_seconds(ttl, default=default, maximum=maximum)
    except InvalidArgument as error:
        assert not (math.isfinite(ttl) and 0 <= ttl <= maximum)
        assert error.reason == "INVALID_TTL"
    else:
        assert 1 <= seconds <= maximum
        assert seconds >= ttl
