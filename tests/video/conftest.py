"""Fixtures for the video tests: a VideoService in ``suite(...)`` with real test ports.

The files service's upload engine and the jobs service are not part of this branch, so the
two ports are implemented here for real, but simply: ``SingleObjectUploads`` collects the
chunks and stores them with one PUT (then inserts the ``files.files`` row), and
``RecordingJobs`` keeps the enqueued jobs in a list so a test can run the handlers on them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from mediagrid.files.v1 import file_pb2, video_service_pb2, video_service_pb2_grpc

from common.app import AppContext, ServiceInstance
from common.aws import ensure_bucket
from common.context import Principal
from common.registry import SERVICES, ServiceSpec
from common.settings import Settings
from services.files.models import FileRecord
from services.files.upload import Progress, UploadStart
from services.files.video.app import create_video_service
from services.files.video.ports import UploadItem, UploadOutput
from services.jobs.worker.api import HANDLERS, WorkerResources
from tests.support.auth import StaticAuthenticator, bearer, principal

TOKENS = {
    "alice": principal("alice"),
    "bob": principal("bob"),
    "carol": principal("carol"),
    "admin": principal("root", role="admin"),
    "worker": principal("video-worker", role="service"),
}


@dataclass
class EnqueuedJob:
    name: str
    type: str
    payload: dict[str, Any]
    file: str
    owner: str


class RecordingJobs:
    """In-memory ``VideoJobs``: remembers every enqueued job."""

    def __init__(self) -> None:
        self.jobs: list[EnqueuedJob] = []

    async def enqueue(
        self, job_type: str, payload: Mapping[str, Any], *, file: str, owner: str
    ) -> str:
        name = f"jobs/{uuid.uuid4().hex}"
        self.jobs.append(EnqueuedJob(name, job_type, dict(payload), file, owner))
        return name

    def of_type(self, job_type: str) -> list[EnqueuedJob]:
        return [j for j in self.jobs if j.type == job_type]


class SingleObjectUploads:
    """``VideoUploads`` for tests: one PUT of the whole body, then the files.files row."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.profiles: list[tuple[int, int, str]] = []

    async def upload(
        self,
        principal: Principal,
        items: AsyncIterator[UploadItem],
        *,
        part_size_bytes: int,
        concurrency: int,
        kind: str,
    ) -> AsyncIterator[UploadOutput]:
        self.profiles.append((part_size_bytes, concurrency, kind))
        header: UploadStart | None = None
        chunks: list[bytes] = []
        received = 0
        async for item in items:
            if isinstance(item, UploadStart):
                header = item
                continue
            chunks.append(item)
            received += len(item)
            yield Progress("uploads/test", received, 0, 0)
        assert header is not None
        data = b"".join(chunks)
        file_id = uuid.uuid4().hex
        bucket = self.ctx.settings.bucket("files")
        key = f"users/{principal.user_id}/{file_id}/content"
        async with self.ctx.aws.s3() as s3:
            put = await s3.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=header.content_type
            )
        sha = hashlib.sha256(data).hexdigest()
        await self.ctx.pool.execute(
            """INSERT INTO files.files (id, owner_id, display_name, content_type, size_bytes,
                   sha256, bucket, object_key, version_id, etag, kind)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            file_id,
            principal.user_id,
            header.display_name,
            header.content_type,
            len(data),
            sha,
            bucket,
            key,
            put["VersionId"],
            put["ETag"],
            kind,
        )
        yield Progress("uploads/test", received, received, 0)
        row = await self.ctx.pool.fetchrow("SELECT * FROM files.files WHERE id = $1", file_id)
        yield FileRecord.from_row(row)


class RecordingActivity:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, str]]] = []

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        self.entries.append((action, resource, dict(metadata or {})))


@dataclass
class TestJob:
    """A real ``JobContext`` for calling handlers directly (the jobs runtime is elsewhere)."""

    __test__ = False

    name: str
    type: str
    payload: Mapping[str, Any]
    owner: str
    resources: WorkerResources
    attempt: int = 1
    reports: list[tuple[float, str]] = field(default_factory=list)

    async def progress(self, percent: float, message: str = "") -> None:
        assert 0 <= percent <= 100
        self.reports.append((percent, message))


@dataclass
class VideoEnv:
    ctx: AppContext
    channel: grpc.aio.Channel
    stub: Any
    jobs: RecordingJobs
    uploads: SingleObjectUploads
    activity: RecordingActivity

    def resources(self) -> WorkerResources:
        return WorkerResources(
            settings=self.ctx.settings,
            aws=self.ctx.aws,
            channel=lambda name: self.channel,
            call_metadata=bearer("worker"),
        )

    async def run(self, enqueued: EnqueuedJob) -> Mapping[str, Any] | None:
        job = self.job_context(enqueued)
        return await HANDLERS[enqueued.type].function(job)

    def job_context(self, enqueued: EnqueuedJob) -> TestJob:
        return TestJob(
            enqueued.name, enqueued.type, enqueued.payload, enqueued.owner, self.resources()
        )

    async def upload(
        self, data: bytes, *, token: str = "alice", content_type: str = "video/mp4"
    ) -> str:
        """Upload through UploadVideo; returns the video name."""
        responses = [
            r
            async for r in self.stub.UploadVideo(
                upload_stream(data, content_type), metadata=bearer(token)
            )
        ]
        assert responses[-1].WhichOneof("payload") == "file"
        return "videos/" + responses[-1].file.name.removeprefix("files/")


def upload_stream(
    data: bytes, content_type: str, chunk: int = 64 * 1024
) -> Iterator[video_service_pb2.UploadVideoRequest]:
    header = file_pb2.UploadHeader(
        display_name="clip.mp4", content_type=content_type, size_bytes=len(data)
    )
    yield video_service_pb2.UploadVideoRequest(header=header)
    for offset in range(0, len(data), chunk):
        yield video_service_pb2.UploadVideoRequest(data=data[offset : offset + chunk])


@dataclass(frozen=True)
class _InlineSpec(ServiceSpec):
    build: Callable[[AppContext], Awaitable[ServiceInstance]] | None = None

    def load_factory(self) -> Any:
        return self.build


@pytest_asyncio.fixture
async def video_env(suite: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VideoEnv]:
    jobs = RecordingJobs()
    holder: dict[str, SingleObjectUploads] = {}

    async def build(ctx: AppContext) -> ServiceInstance:
        async with ctx.aws.s3() as s3:
            await ensure_bucket(s3, ctx.settings.bucket("files"))
        holder["uploads"] = SingleObjectUploads(ctx)
        _, register, name = await create_video_service(ctx, uploads=holder["uploads"], jobs=jobs)
        return ServiceInstance(name="files", service_names=[name], register=register)

    monkeypatch.setitem(SERVICES, "files", _InlineSpec("files", "files", "inline", build=build))
    import services.files.video.handlers  # noqa: F401  (registers the handlers)

    activity = RecordingActivity()
    _, ctx, channel = await suite(
        "files", authenticator=StaticAuthenticator(TOKENS), activity=activity
    )
    yield VideoEnv(
        ctx,
        channel,
        video_service_pb2_grpc.VideoServiceStub(channel),
        jobs,
        holder["uploads"],
        activity,
    )


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """The integration lane: SeaweedFS (or real AWS S3) instead of moto (tests/README.md)."""
    return store_settings
