"""Worker handlers of the ``video.probe`` and ``video.thumbnail`` jobs.

They read the video from S3 with cached ranged GETs (PyAV in a worker thread), store the
thumbnails next to the content object (``.../{file}/thumbnails/{n}.jpg``) and record the
outcome through the VideoService (``RecordVideoMetadata`` / ``RecordThumbnails``) with the
worker's own credentials. A file that is not a readable video is recorded as FAILED on the
video first, then ends the job with ``PermanentJobError``; the worker never crashes on it.

A handler acts for the job's owner and does not trust the payload: its bucket must be the
files bucket of the settings and its key the content key of the payload's file under the
owner's prefix (``users/{owner}/``); anything else ends the job with ``PermanentJobError``
before S3 is touched, so a job cannot read, or write thumbnails next to, another user's video.
The payload format is documented in ``services/files/video/payloads.py`` and docs/video.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from botocore.exceptions import ClientError
from mediagrid.files.v1 import video_service_pb2, video_service_pb2_grpc
from pydantic import ValidationError

from common.aws import AwsClients
from services.files import keys
from services.files.video import convert
from services.files.video.payloads import PROBE_JOB, THUMBNAIL_JOB, VideoJobPayload
from services.files.video.processing import (
    InvalidVideo,
    RenderedThumbnail,
    probe,
    render_thumbnails,
)
from services.files.video.range_reader import RangeReader
from services.files.video.storage import (
    open_video_object,
    thumbnail_key,
    thumbnail_prefix,
)
from services.jobs.worker.api import JobContext, PermanentJobError, RetryableJobError, handler

log = logging.getLogger("mediagrid.video.handlers")

RPC_TIMEOUT_SECONDS = 30.0
_MISSING_CODES = {"404", "NoSuchKey", "NoSuchVersion", "NoSuchBucket"}

T = TypeVar("T")


class _ObjectMissing(Exception):
    """The object (version) named by the payload does not exist (any more)."""


def _payload(job: JobContext) -> VideoJobPayload:
    """The payload, if it names the owner's own file in the files bucket."""
    try:
        payload = VideoJobPayload.model_validate(dict(job.payload))
    except ValidationError as exc:
        raise PermanentJobError(f"invalid {job.type} payload: {exc}") from None
    expected_bucket = job.resources.settings.bucket("files")
    if payload.bucket != expected_bucket:
        raise PermanentJobError(
            f"payload.bucket {payload.bucket!r} is not the files bucket {expected_bucket!r}"
        )
    owner_id = job.owner.removeprefix("users/") if job.owner.startswith("users/") else ""
    parsed = keys.parse_content_key(payload.key)
    if parsed is None or parsed.owner_id != owner_id or parsed.file_id != payload.file_id:
        raise PermanentJobError(
            f"payload.key {payload.key!r} is not the content of {payload.file} "
            f"under {keys.user_prefix(owner_id or '?')} of the job's owner {job.owner}"
        )
    return payload


def _open(aws: AwsClients, payload: VideoJobPayload) -> RangeReader:
    try:
        return open_video_object(
            aws.sync_s3(),
            aws,
            bucket=payload.bucket,
            key=payload.key,
            version_id=payload.version_id,
        )
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
            raise _ObjectMissing(f"s3://{payload.bucket}/{payload.key} does not exist") from exc
        raise


async def _in_thread(function: Callable[..., T], *args: Any, bound: float | None = None) -> T:
    """Run blocking PyAV/boto3 work off the event loop; S3 hiccups become retryable.

    With ``bound``, the job stops waiting after that many seconds (retryable); the thread
    itself cannot be cancelled and ends when botocore's read timeout lets it go."""
    try:
        async with asyncio.timeout(bound):
            return await asyncio.to_thread(function, *args)
    except (InvalidVideo, _ObjectMissing, PermanentJobError):
        raise
    except TimeoutError as exc:
        raise RetryableJobError(f"S3 did not answer within {bound:.3g}s") from exc
    except (ClientError, OSError) as exc:
        raise RetryableJobError(f"reading the video from S3 failed: {exc}") from exc


async def _s3_step(what: str, seconds: float, call: Awaitable[T]) -> T:
    """One S3 call of a handler, bounded (botocore bounds only each socket read)."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError as exc:
        raise RetryableJobError(f"S3 {what} did not answer within {seconds:.3g}s") from exc


def _failure_message(payload: VideoJobPayload, exc: Exception) -> str:
    if isinstance(exc, _ObjectMissing):
        return f"{payload.file}: the stored object is gone: {exc}"
    return f"{payload.file} is not a readable video: {exc}"


def _stub(job: JobContext) -> Any:
    return video_service_pb2_grpc.VideoServiceStub(job.resources.channel("files"))


async def _call(job: JobContext, method: str, request: Any) -> Any:
    """Call a VideoService RPC as the worker; a deleted video ends the job for good."""
    try:
        return await getattr(_stub(job), method)(
            request, metadata=job.resources.call_metadata, timeout=RPC_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise PermanentJobError(f"{method} rejected the result: {exc.details()}") from exc
        raise


def _is_stale(exc: grpc.aio.AioRpcError) -> bool:
    return bool(exc.code() == grpc.StatusCode.FAILED_PRECONDITION)


async def _fail(job: JobContext, method: str, request: Any, message: str) -> PermanentJobError:
    """Record the failure on the video (so GetVideo shows it); the error ends the job."""
    try:
        await _call(job, method, request)
    except grpc.aio.AioRpcError as exc:
        if not _is_stale(exc):
            raise
    return PermanentJobError(message)


@handler(PROBE_JOB, timeout_seconds=300)
async def probe_video(job: JobContext) -> dict[str, Any]:
    """Extract metadata (duration, codecs, size, frame rate, bit rate, rotation)."""
    payload = _payload(job)
    aws = job.resources.aws
    await job.progress(5, "opening the video")
    try:
        reader = await _in_thread(_open, aws, payload, bound=aws.settings.s3_call_timeout_seconds)
        await job.progress(20, "probing")
        metadata = await _in_thread(probe, reader)
    except (InvalidVideo, _ObjectMissing) as exc:
        message = _failure_message(payload, exc)
        request = video_service_pb2.RecordVideoMetadataRequest(
            name=payload.video, job=job.name, error=message
        )
        raise await _fail(job, "RecordVideoMetadata", request, message) from exc
    await job.progress(80, "recording the metadata")
    request = video_service_pb2.RecordVideoMetadataRequest(
        name=payload.video, job=job.name, metadata=convert.metadata_to_proto(metadata)
    )
    result: dict[str, Any] = metadata.model_dump()
    try:
        await _call(job, "RecordVideoMetadata", request)
    except grpc.aio.AioRpcError as exc:
        if not _is_stale(exc):
            raise
        result["superseded"] = True  # a newer probe job owns the step now
    await job.progress(100, "done")
    return result


@handler(THUMBNAIL_JOB, timeout_seconds=600)
async def render_video_thumbnails(job: JobContext) -> dict[str, Any]:
    """Render JPEG thumbnails, store them in S3 and record them on the video."""
    payload = _payload(job)
    settings = job.resources.settings
    aws = job.resources.aws
    times = payload.times or list(settings.video_thumbnail_times_seconds)
    width = payload.width or settings.video_thumbnail_width
    await job.progress(2, "opening the video")
    rendered: list[RenderedThumbnail] = []
    try:
        reader = await _in_thread(_open, aws, payload, bound=settings.s3_call_timeout_seconds)
        for index, seconds in enumerate(times):
            reader.seek(0)
            (thumb,) = await _in_thread(
                _render_one, reader, seconds, width, settings.video_thumbnail_quality
            )
            rendered.append(thumb)
            await job.progress(5 + 70 * (index + 1) / len(times), f"rendered {index + 1}")
    except (InvalidVideo, _ObjectMissing) as exc:
        message = _failure_message(payload, exc)
        request = video_service_pb2.RecordThumbnailsRequest(
            name=payload.video, job=job.name, error=message
        )
        raise await _fail(job, "RecordThumbnails", request, message) from exc
    stored = await _store(job, payload, rendered)
    await job.progress(90, "recording the thumbnails")
    request = video_service_pb2.RecordThumbnailsRequest(
        name=payload.video,
        job=job.name,
        thumbnails=[
            video_service_pb2.Thumbnail(
                index=index,
                time_offset=convert.duration(thumb.time_seconds),
                width=thumb.width,
                height=thumb.height,
                size_bytes=len(thumb.jpeg),
                key=key,
                version_id=version,
            )
            for index, (thumb, (key, version)) in enumerate(zip(rendered, stored, strict=True))
        ],
    )
    result: dict[str, Any] = {"thumbnails": [key for key, _ in stored], "width": width}
    try:
        await _call(job, "RecordThumbnails", request)
    except grpc.aio.AioRpcError as exc:
        if not _is_stale(exc):
            raise
        result["superseded"] = True
    await job.progress(100, "done")
    return result


def _render_one(
    reader: RangeReader, seconds: float, width: int, quality: int
) -> list[RenderedThumbnail]:
    return render_thumbnails(reader, [seconds], width, quality=quality)


async def _store(
    job: JobContext, payload: VideoJobPayload, rendered: list[RenderedThumbnail]
) -> list[tuple[str, str]]:
    """Put the JPEGs under the file's prefix and delete thumbnails of an older, longer set.

    ``payload.key`` was checked to lie under the job owner's prefix (``_payload``), so every
    key written or deleted here does too. Returns (key, S3 version id) per thumbnail; the
    recorded URLs pin the version.
    """
    owner = job.owner
    settings = job.resources.settings
    call, transfer = settings.s3_call_timeout_seconds, settings.s3_transfer_timeout_seconds
    names = [thumbnail_key(payload.key, index) for index in range(len(rendered))]
    versions = []
    async with job.resources.aws.s3() as s3:
        for key, thumb in zip(names, rendered, strict=True):
            put = await _s3_step(
                "put thumbnail",
                transfer,
                s3.put_object(
                    Bucket=payload.bucket,
                    Key=key,
                    Body=thumb.jpeg,
                    ContentType="image/jpeg",
                    Metadata={"file-id": payload.file_id, "owner": owner, "job": job.name},
                ),
            )
            versions.append(str(put.get("VersionId") or ""))
        listing = await _s3_step(
            "list thumbnails",
            call,
            s3.list_objects_v2(Bucket=payload.bucket, Prefix=thumbnail_prefix(payload.key)),
        )
        stale = [o["Key"] for o in listing.get("Contents", []) if o["Key"] not in set(names)]
        if stale:
            await _s3_step(
                "delete stale thumbnails",
                call,
                s3.delete_objects(
                    Bucket=payload.bucket, Delete={"Objects": [{"Key": k} for k in stale]}
                ),
            )
    return list(zip(names, versions, strict=True))
