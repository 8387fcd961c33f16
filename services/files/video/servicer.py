"""gRPC handlers of ``mediagrid.files.v1.VideoService``.

Access: the owner of the file, admins and service principals (other services of the suite,
as in the FileService), and the users the file is shared with (``FileService.ShareFile``):
readers may get a video and its stream URL, writers may also regenerate its thumbnails. The
Record* RPCs belong to service principals (workers) only.
PERMISSION_DENIED is decided before NOT_FOUND: an ordinary user asking for something that
does not exist, or that is not theirs, gets PERMISSION_DENIED either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import grpc
from mediagrid.files.v1 import file_pb2, video_service_pb2, video_service_pb2_grpc
from pydantic import ValidationError

from common import pagination, timestamps
from common.app import AppContext
from common.auth import scope_allows
from common.context import Principal, current_principal
from common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from services.files import convert as files_convert
from services.files.access import require_file, require_user
from services.files.models import FileRecord
from services.files.repository import FileRepository
from services.files.storage import PRESENCE_CHECK_SECONDS, s3_call, stored_versions
from services.files.upload import UploadStart
from services.files.video import convert, validation
from services.files.video.models import Video
from services.files.video.payloads import (
    MAX_THUMBNAILS,
    PROBE_JOB,
    THUMBNAIL_JOB,
    VideoJobPayload,
    video_id,
)
from services.files.video.ports import UploadItem, VideoJobs, VideoUploads
from services.files.video.repository import VideoCursor, VideoRepository
from services.files.video.storage import thumbnail_prefix

log = logging.getLogger("mediagrid.video")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


# video/<subtype> with optional parameters; printable ASCII only, no whitespace around it.
_VIDEO_TYPE = re.compile(
    r"video/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;[ -~]{0,200})?", re.IGNORECASE
)


def is_video_content_type(content_type: str) -> bool:
    return _VIDEO_TYPE.fullmatch(content_type) is not None


# S3 listings one ListVideos page runs at once (each in a thread of the default executor).
LISTINGS_IN_FLIGHT = 4


class VideoServicer(video_service_pb2_grpc.VideoServiceServicer):
    def __init__(
        self,
        ctx: AppContext,
        repository: VideoRepository,
        *,
        files: FileRepository,
        presigner: Any,
        uploads: VideoUploads,
        jobs: VideoJobs,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.repository = repository
        self.files = files  # file records and shares: access is the FileService's rule
        # Synchronous boto3 client for the URLs handed out (signed for the public endpoint
        # when there is one): presigning is local computation.
        self.presigner = presigner
        self.uploads = uploads
        self.jobs = jobs

    # --- access ----------------------------------------------------------------------

    @staticmethod
    def _require_service(principal: Principal) -> None:
        if not principal.is_service or not scope_allows(principal, "files.write"):
            raise PermissionDenied(
                "only service principals (workers) may record processing results",
                reason="SERVICE_ONLY",
            )

    async def _video(self, name: str, need: Literal["read", "write"] = "read") -> Video:
        file_id = video_id(name)
        await require_file(self.files, current_principal(), file_id, need)
        return await self.repository.get_video(file_id)

    # --- presigning ------------------------------------------------------------------

    def _presign(self, params: Mapping[str, str], seconds: int) -> tuple[str, datetime]:
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        url = self.presigner.generate_presigned_url(
            "get_object", Params=dict(params), ExpiresIn=seconds
        )
        return str(url), expires

    def _presign_thumbnail(
        self, bucket: str, key: str, version_id: str | None
    ) -> tuple[str, datetime]:
        params = {"Bucket": bucket, "Key": key, "ResponseContentType": "image/jpeg"}
        if version_id:
            params["VersionId"] = version_id
        seconds = min(self.settings.presign_default_seconds, self.settings.presign_max_seconds)
        return self._presign(params, seconds)

    async def _to_proto(self, video: Video) -> video_service_pb2.Video:
        """The video with URLs for the thumbnails that are stored (none for a thumbnail whose
        object is gone, e.g. from a wiped store: a URL that answers 404 helps nobody)."""
        stored: set[tuple[str, str, str | None]] | None = None
        try:
            found: set[tuple[str, str, str | None]] = set()
            for bucket in {thumb.bucket for thumb in video.thumbnails}:
                listed = await stored_versions(
                    self.ctx.dependencies.s3,
                    self.ctx.aws.sync_s3(),
                    bucket,
                    thumbnail_prefix(video.object_key),
                )
                found |= {(bucket, key, version) for key, version in listed}
            stored = found
        except Unavailable:
            # S3 does not answer: the video still answers from PostgreSQL, with URLs minted
            # unverified (they work once S3 is back; docs/operations.md "Graceful degradation").
            stored = None

        def presign(bucket: str, key: str, version_id: str | None) -> tuple[str, datetime] | None:
            if stored is not None and (bucket, key, version_id) not in stored:
                return None
            return self._presign_thumbnail(bucket, key, version_id)

        return convert.video_to_proto(video, presign)

    async def _require_object(self, video: Video) -> None:
        """DATA_LOSS (``OBJECT_MISSING``) when S3 says the video's object is not stored (while
        S3 does not answer, the URL is minted unverified, as for files)."""
        head = {"Bucket": video.bucket, "Key": video.object_key}
        if video.version_id:
            head["VersionId"] = video.version_id
        what = "head video object"
        try:
            await self.ctx.dependencies.s3.call(
                lambda: s3_call(
                    what, lambda: asyncio.to_thread(self.ctx.aws.sync_s3().head_object, **head)
                ),
                what=what,
                cap=PRESENCE_CHECK_SECONDS,
            )
        except Unavailable:
            log.debug("S3 unavailable; minting a stream URL for %s unverified", video.name)
        except NotFound as exc:
            raise DataLoss(
                f"the stored content of {video.name} is missing from S3 (the object store was "
                "wiped or restored without it); `mediagrid check` lists such files",
                reason="OBJECT_MISSING",
                metadata={"resource": video.name},
            ) from exc

    # --- jobs ------------------------------------------------------------------------

    @staticmethod
    def _payload(video: Video, **extra: Any) -> dict[str, Any]:
        payload = VideoJobPayload(
            file=video.file,
            bucket=video.bucket,
            key=video.object_key,
            version_id=video.version_id or None,
            **extra,
        )
        return payload.model_dump(exclude_none=True)

    async def _enqueue_processing(self, video: Video) -> None:
        """Enqueue probe + thumbnails; a failure is recorded on the steps, never raised.

        The file is already committed: failing the upload now would make the client upload
        it again (a duplicate), so the video shows FAILED steps instead.
        """
        try:
            await self._enqueue_steps(video)
        except Exception as exc:
            log.exception("enqueueing the processing of %s failed", video.name)
            await self.repository.fail_unscheduled_steps(
                video.file_id, f"the processing job could not be enqueued: {exc}"
            )

    async def _enqueue_steps(self, video: Video) -> None:
        probe = await self.jobs.enqueue(
            PROBE_JOB, self._payload(video), file=video.file, owner=video.owner
        )
        await self.repository.set_probe_job(video.file_id, probe)
        thumbs = await self.jobs.enqueue(
            THUMBNAIL_JOB, self._payload(video), file=video.file, owner=video.owner
        )
        await self.repository.set_thumbnail_job(video.file_id, thumbs)

    # --- RPCs ------------------------------------------------------------------------

    async def GetVideo(
        self, request: video_service_pb2.GetVideoRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.GetVideoResponse:
        video = await self._video(request.name)
        return video_service_pb2.GetVideoResponse(video=await self._to_proto(video))

    async def ListVideos(
        self, request: video_service_pb2.ListVideosRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.ListVideosResponse:
        principal = current_principal()
        owner_id = principal.user_id
        if request.owner:
            if not request.owner.startswith("users/") or len(request.owner) <= len("users/"):
                raise InvalidArgument.field("owner", "expected users/{user}")
            owner_id = request.owner.removeprefix("users/")
        require_user(principal, owner_id)  # the FileService's rule for a user's collection
        size = pagination.page_size(
            request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE
        )
        videos, token = await pagination.page(
            "ListVideos",
            {"owner": owner_id},
            request.page_token,
            size,
            lambda after, limit: self.repository.list_videos(
                owner_id,
                limit,
                VideoCursor(create_time=after[0], file_id=after[1]) if after else None,
            ),
            lambda video: (video.create_time, video.file_id),
            pagination.BY_TIME,
        )
        # Each video's thumbnails are looked up in S3 (one listing): a page's lookups run
        # side by side, a few at a time, instead of one after the other.
        gate = asyncio.Semaphore(LISTINGS_IN_FLIGHT)

        async def to_proto(video: Video) -> video_service_pb2.Video:
            async with gate:
                return await self._to_proto(video)

        return video_service_pb2.ListVideosResponse(
            videos=await asyncio.gather(*(to_proto(v) for v in videos)), next_page_token=token
        )

    async def UploadVideo(
        self,
        request_iterator: AsyncIterator[video_service_pb2.UploadVideoRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[video_service_pb2.UploadVideoResponse]:
        principal = current_principal()
        # A failing upload's remaining messages are drained by the suite interceptor.
        header = await _read_header(request_iterator)
        committed: FileRecord | None = None
        async for output in self.uploads.upload(
            principal,
            _items(files_convert.header_from_proto(header), request_iterator),
            part_size_bytes=self.settings.video_upload_part_size_bytes,
            concurrency=self.settings.video_upload_concurrency,
            kind="video",
        ):
            if isinstance(output, FileRecord):
                committed = output
            else:
                yield video_service_pb2.UploadVideoResponse(
                    progress=files_convert.progress_to_proto(output)
                )
        if committed is None:
            raise FailedPrecondition(
                "the upload ended without a committed file", reason="UPLOAD_INCOMPLETE"
            )
        video = await self.repository.register_video(video_id(committed.name, "file"))
        await self.ctx.activity.record(
            "video.upload",
            video.name,
            {
                "file": video.file,
                "size_bytes": str(video.size_bytes),
                "content_type": video.content_type,
            },
        )
        await self._enqueue_processing(video)
        yield video_service_pb2.UploadVideoResponse(file=files_convert.file_to_proto(committed))

    async def CreateStreamUrl(
        self, request: video_service_pb2.CreateStreamUrlRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.CreateStreamUrlResponse:
        video = await self._video(request.name)
        seconds = validation.stream_ttl_seconds(
            convert.seconds(request.ttl),
            default=self.settings.presign_default_seconds,
            maximum=self.settings.presign_max_seconds,
        )
        params = {
            "Bucket": video.bucket,
            "Key": video.object_key,
            "ResponseContentType": video.content_type,
        }
        if video.version_id:
            params["VersionId"] = video.version_id
        await self._require_object(video)
        url, expires = self._presign(params, seconds)
        await self.ctx.activity.record(
            "video.stream_url", video.name, {"ttl_seconds": str(seconds)}
        )
        return video_service_pb2.CreateStreamUrlResponse(
            url=url,
            expire_time=timestamps.timestamp(expires),
            content_type=video.content_type,
            size_bytes=video.size_bytes,
        )

    async def RegenerateThumbnails(
        self,
        request: video_service_pb2.RegenerateThumbnailsRequest,
        context: grpc.aio.ServicerContext,
    ) -> video_service_pb2.RegenerateThumbnailsResponse:
        video = await self._video(request.name, "write")
        times = list(request.times_seconds)
        found = Violations()
        if len(times) > MAX_THUMBNAILS:
            found.add("times_seconds", f"at most {MAX_THUMBNAILS} times")
        elif any(not math.isfinite(t) or t < 0 or t > 86_400 for t in times):
            found.add("times_seconds", "each time must be between 0 and 86400")
        if request.width and not 16 <= request.width <= 3840:
            found.add("width", "must be 0 (default) or between 16 and 3840")
        found.raise_if_any()
        extra: dict[str, Any] = {
            "times": times or list(self.settings.video_thumbnail_times_seconds),
            "width": request.width or self.settings.video_thumbnail_width,
        }
        await self.repository.restart_thumbnails(video.file_id)
        try:
            job = await self.jobs.enqueue(
                THUMBNAIL_JOB,
                self._payload(video, **extra),
                file=video.file,
                owner=video.owner,
            )
        except Exception as exc:
            await self.repository.fail_unscheduled_steps(
                video.file_id, f"the thumbnail job could not be enqueued: {exc}"
            )
            raise
        await self.repository.set_thumbnail_job(video.file_id, job)
        await self.ctx.activity.record("video.regenerate_thumbnails", video.name, {"job": job})
        return video_service_pb2.RegenerateThumbnailsResponse(job=job)

    async def RecordVideoMetadata(
        self,
        request: video_service_pb2.RecordVideoMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> video_service_pb2.RecordVideoMetadataResponse:
        self._require_service(current_principal())
        file_id = video_id(request.name)
        job = _job_name(request.job)
        outcome = request.WhichOneof("outcome")
        if outcome is None:
            raise InvalidArgument("set either metadata or error", reason="OUTCOME_REQUIRED")
        metadata = None
        if outcome == "metadata":
            metadata = validation.video_metadata(convert.metadata_values(request.metadata))
        elif not request.error.strip():
            raise InvalidArgument.field("error", "must describe the failure")
        video = await self.repository.record_probe(file_id, job, metadata, request.error or None)
        await self.ctx.activity.record(
            "video.probe.record", video.name, {"job": job, "state": video.probe.state.value}
        )
        return video_service_pb2.RecordVideoMetadataResponse(video=await self._to_proto(video))

    async def RecordThumbnails(
        self, request: video_service_pb2.RecordThumbnailsRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.RecordThumbnailsResponse:
        self._require_service(current_principal())
        file_id = video_id(request.name)
        job = _job_name(request.job)
        current = await self.repository.get_video(file_id)
        thumbnails = []
        if not request.error:
            prefix = thumbnail_prefix(current.object_key)
            if len(request.thumbnails) > MAX_THUMBNAILS:
                raise InvalidArgument.field("thumbnails", f"at most {MAX_THUMBNAILS}")
            if len({t.index for t in request.thumbnails}) != len(request.thumbnails):
                raise InvalidArgument.field("thumbnails", "indexes must be unique")
            for position, message in enumerate(request.thumbnails):
                if not message.key.startswith(prefix):
                    raise InvalidArgument.field(
                        f"thumbnails[{position}].key", f"must start with {prefix}"
                    )
                try:
                    thumbnails.append(convert.thumbnail_from_proto(message, current.bucket))
                except ValidationError as exc:
                    raise InvalidArgument.field(
                        f"thumbnails[{position}]", _first_error(exc)
                    ) from None
        video = await self.repository.record_thumbnails(
            file_id, job, thumbnails, request.error or None
        )
        await self.ctx.activity.record(
            "video.thumbnails.record",
            video.name,
            {"job": job, "state": video.thumbnail_step.state.value, "count": str(len(thumbnails))},
        )
        return video_service_pb2.RecordThumbnailsResponse(video=await self._to_proto(video))


# --- helpers -----------------------------------------------------------------------------


async def _read_header(
    requests: AsyncIterator[video_service_pb2.UploadVideoRequest],
) -> file_pb2.UploadHeader:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("payload") is None:
        raise InvalidArgument(
            "the stream must start with an upload header", reason="HEADER_REQUIRED"
        )
    if first.WhichOneof("payload") != "header":
        raise InvalidArgument("data arrived before the upload header", reason="HEADER_REQUIRED")
    header: file_pb2.UploadHeader = first.header
    if not is_video_content_type(header.content_type):
        raise InvalidArgument.field(
            "header.content_type",
            f"must be a video/* type, got {header.content_type[:100]!r}",
            reason="NOT_A_VIDEO",
        )
    return header


async def _items(
    header: UploadStart, requests: AsyncIterator[video_service_pb2.UploadVideoRequest]
) -> AsyncIterator[UploadItem]:
    yield header
    async for request in requests:
        kind = request.WhichOneof("payload")
        if kind == "header":
            raise InvalidArgument("the upload header was sent twice", reason="HEADER_REPEATED")
        if kind == "data":
            yield request.data


def _job_name(job: str) -> str:
    if not job.startswith("jobs/") or len(job) <= len("jobs/") or len(job) > 200:
        raise InvalidArgument.field("job", "expected jobs/{job}")
    return job


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
