"""Upload -> jobs -> handlers -> GetVideo, through real gRPC, PostgreSQL and moto S3."""

from __future__ import annotations

import asyncio
import io
import urllib.request

import grpc
import pytest
from mediagrid.files.v1 import video_service_pb2
from PIL import Image

from common.errors import Unavailable
from common.grpc_errors import error_info
from services.jobs.worker.api import HANDLERS, JobContext, PermanentJobError
from tests.support.auth import bearer
from tests.video.clips import make_clip, rotate_clockwise
from tests.video.conftest import VideoEnv

PENDING = video_service_pb2.PROCESSING_STATE_PENDING
SUCCEEDED = video_service_pb2.PROCESSING_STATE_SUCCEEDED
FAILED = video_service_pb2.PROCESSING_STATE_FAILED


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


async def get(env: VideoEnv, name: str, token: str = "alice") -> video_service_pb2.Video:
    response = await env.stub.GetVideo(
        video_service_pb2.GetVideoRequest(name=name), metadata=bearer(token)
    )
    return response.video


def test_handlers_are_registered_for_both_job_types() -> None:
    import services.files.video.handlers  # noqa: F401

    assert {"video.probe", "video.thumbnail"} <= set(HANDLERS)


async def test_upload_enqueues_jobs_and_handlers_record_metadata_and_thumbnails(
    video_env: VideoEnv,
) -> None:
    clip = make_clip(seconds=2.0, fps=25, width=320, height=240, audio=True)
    name = await video_env.upload(clip)
    file_id = name.removeprefix("videos/")
    settings = video_env.ctx.settings
    assert video_env.uploads.profiles == [
        (settings.video_upload_part_size_bytes, settings.video_upload_concurrency, "video")
    ]

    (probe_job,) = video_env.jobs.of_type("video.probe")
    (thumb_job,) = video_env.jobs.of_type("video.thumbnail")
    assert probe_job.owner == "users/alice" and probe_job.file == f"files/{file_id}"
    assert probe_job.payload["file"] == f"files/{file_id}"
    assert probe_job.payload["key"] == f"users/alice/{file_id}/content"
    assert probe_job.payload["bucket"] == settings.bucket("files")
    assert probe_job.payload["version_id"]

    video = await get(video_env, name)
    assert video.probe.state == PENDING and video.probe.job == probe_job.name
    assert video.thumbnail_step.state == PENDING and video.thumbnail_step.job == thumb_job.name
    assert not video.HasField("metadata")

    context = video_env.job_context(probe_job)
    _: JobContext = context  # the test class satisfies the worker's protocol
    result = await HANDLERS["video.probe"].function(context)
    assert result is not None and result["video_codec"] == "h264"
    assert [p for p, _ in context.reports] == sorted(p for p, _ in context.reports)
    assert context.reports[-1][0] == 100

    thumb_context = video_env.job_context(thumb_job)
    await HANDLERS["video.thumbnail"].function(thumb_context)
    percents = [p for p, _ in thumb_context.reports]
    assert percents == sorted(percents) and percents[-1] == 100
    video = await get(video_env, name)
    meta = video.metadata
    assert video.probe.state == SUCCEEDED and video.thumbnail_step.state == SUCCEEDED
    assert meta.duration.ToNanoseconds() / 1e9 == pytest.approx(2.0, abs=0.05)
    assert (meta.width, meta.height) == (320, 240)
    assert meta.frame_rate == pytest.approx(25.0)
    assert (meta.video_codec, meta.audio_codec) == ("h264", "aac")
    assert meta.rotation_degrees == 0

    times = list(settings.video_thumbnail_times_seconds)
    assert len(video.thumbnails) == len(times)
    for index, thumb in enumerate(video.thumbnails):
        assert thumb.index == index
        assert thumb.key == f"users/alice/{file_id}/thumbnails/{index}.jpg"
        assert thumb.version_id and f"versionId={thumb.version_id}" in thumb.url
        assert thumb.time_offset.ToNanoseconds() / 1e9 == pytest.approx(
            min(times[index], 2.0), abs=0.05
        )
        status, body = await asyncio.to_thread(http_get, thumb.url)
        assert status == 200 and len(body) == thumb.size_bytes
        image = Image.open(io.BytesIO(body))
        assert image.format == "JPEG"
        assert image.size == (
            settings.video_thumbnail_width,
            240 * settings.video_thumbnail_width // 320,
        )
    actions = [a for a, _, _ in video_env.activity.entries]
    assert actions == ["video.upload", "video.probe.record", "video.thumbnails.record"]


async def test_a_rotated_clip_is_recorded_with_its_rotation(video_env: VideoEnv) -> None:
    name = await video_env.upload(rotate_clockwise(make_clip(seconds=1.0), 90))
    await video_env.run(video_env.jobs.of_type("video.probe")[0])
    await video_env.run(video_env.jobs.of_type("video.thumbnail")[0])
    video = await get(video_env, name)
    assert video.metadata.rotation_degrees == 90
    assert (video.thumbnails[0].width, video.thumbnails[0].height) == (320, 427)


@pytest.mark.parametrize(
    "data",
    [b"definitely not a video" * 50, make_clip(seconds=1.0)[:1500]],
    ids=["garbage", "truncated"],
)
async def test_a_corrupt_video_fails_both_jobs_and_the_video_says_so(
    video_env: VideoEnv, data: bytes
) -> None:
    name = await video_env.upload(data)
    for job in video_env.jobs.jobs:
        with pytest.raises(PermanentJobError, match="not a readable video"):
            await video_env.run(job)
    video = await get(video_env, name)
    assert video.probe.state == FAILED and "not a readable video" in video.probe.error
    assert video.thumbnail_step.state == FAILED and video.thumbnail_step.error
    assert not video.HasField("metadata") and not video.thumbnails


async def test_a_missing_object_fails_the_probe_permanently(video_env: VideoEnv) -> None:
    name = await video_env.upload(make_clip(seconds=0.5))
    (job,) = video_env.jobs.of_type("video.probe")
    job.payload["version_id"] = "no-such-version"
    with pytest.raises(PermanentJobError, match="the stored object is gone"):
        await video_env.run(job)
    probe = (await get(video_env, name)).probe
    assert probe.state == FAILED and "the stored object is gone" in probe.error


async def test_a_bad_payload_is_a_permanent_failure(video_env: VideoEnv) -> None:
    await video_env.upload(make_clip(seconds=0.5))
    (job,) = video_env.jobs.of_type("video.probe")
    job.payload["key"] = "../../etc/passwd"
    with pytest.raises(PermanentJobError, match=r"invalid video\.probe payload"):
        await video_env.run(job)


async def test_regenerate_thumbnails_replaces_the_set(video_env: VideoEnv) -> None:
    name = await video_env.upload(make_clip(seconds=2.0))
    for job in list(video_env.jobs.jobs):
        await video_env.run(job)
    response = await video_env.stub.RegenerateThumbnails(
        video_service_pb2.RegenerateThumbnailsRequest(name=name, times_seconds=[0.5], width=64),
        metadata=bearer("alice"),
    )
    regen = video_env.jobs.jobs[-1]
    assert regen.name == response.job and regen.type == "video.thumbnail"
    assert regen.payload["times"] == [0.5] and regen.payload["width"] == 64
    video = await get(video_env, name)
    assert video.thumbnail_step.state == PENDING and video.thumbnail_step.job == response.job

    # The old job's late report is refused: the step belongs to the new job now.
    old = video_env.jobs.of_type("video.thumbnail")[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await video_env.stub.RecordThumbnails(
            video_service_pb2.RecordThumbnailsRequest(name=name, job=old.name, error="late"),
            metadata=bearer("worker"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "STALE_JOB"

    await video_env.run(regen)
    video = await get(video_env, name)
    assert [(t.index, t.width, t.height) for t in video.thumbnails] == [(0, 64, 48)]
    async with video_env.ctx.aws.s3() as s3:
        listing = await s3.list_objects_v2(
            Bucket=video_env.ctx.settings.bucket("files"),
            Prefix=video.thumbnails[0].key.rsplit("/", 1)[0],
        )
    assert [o["Key"] for o in listing["Contents"]] == [video.thumbnails[0].key]

    # The superseded job runs late: its report is refused, and although it overwrites the
    # keys, the recorded thumbnails pin their S3 versions, so they still show the new set.
    result = await video_env.run(old)
    assert result is not None and result["superseded"] is True
    after = await get(video_env, name)
    assert [(t.index, t.width) for t in after.thumbnails] == [(0, 64)]
    status, body = await asyncio.to_thread(http_get, after.thumbnails[0].url)
    assert status == 200 and Image.open(io.BytesIO(body)).size == (64, 48)


async def test_regenerate_thumbnails_validates_its_arguments(video_env: VideoEnv) -> None:
    name = await video_env.upload(make_clip(seconds=0.5))
    cases: list[tuple[list[float], int, str]] = [
        ([-1.0], 0, "times_seconds"),
        ([float("nan")], 0, "times_seconds"),
        ([1.0] * 33, 0, "times_seconds"),
        ([], 8, "width"),
    ]
    for times, width, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await video_env.stub.RegenerateThumbnails(
                video_service_pb2.RegenerateThumbnailsRequest(
                    name=name, times_seconds=times, width=width
                ),
                metadata=bearer("alice"),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in caught.value.details()
    assert len(video_env.jobs.jobs) == 2  # only the upload's own jobs


class BrokenJobs:
    async def enqueue(self, *args: object, **kwargs: object) -> str:
        raise Unavailable("the jobs service is down", reason="JOBS_UNAVAILABLE")


async def test_a_committed_upload_survives_a_jobs_outage(video_env: VideoEnv) -> None:
    servicer_jobs = video_env.jobs
    video_env.jobs.enqueue = BrokenJobs().enqueue  # type: ignore[method-assign]
    name = await video_env.upload(make_clip(seconds=0.5))
    video = await get(video_env, name)
    for step in (video.probe, video.thumbnail_step):
        assert step.state == FAILED and "could not be enqueued" in step.error
    error = None
    try:
        await video_env.stub.RegenerateThumbnails(
            video_service_pb2.RegenerateThumbnailsRequest(name=name), metadata=bearer("alice")
        )
    except grpc.aio.AioRpcError as exc:
        error = exc
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert (await get(video_env, name)).thumbnail_step.state == FAILED
    assert servicer_jobs.jobs == []
