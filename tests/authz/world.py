"""The principals and resources of the authorization matrix, on a real in-process suite.

One ``World`` per test module: the whole suite (users, jobs, files + video) on one server,
its real authenticator, a bootstrap admin who logs in through ``UserService.Login``, a
service principal from ``issue_service_token`` and a service that owns the internal job
types (literal ``jobs.create:job-types/{type}`` grants). Each cell of the matrix (one row,
one caller) gets a fresh ``Cell``: a new owner, other user, share reader and share writer,
fresh sessions for every caller (a cell may log out, revoke or delete), and the owner's
resources, made on first use only: a file shared read-only with the share reader and
read-write with the share writer, a job, a batch, a lease, a video, an upload session, a
grant and an activity entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)
from mediagrid.jobs.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2_grpc,
)
from mediagrid.users.v1 import user_service_pb2 as users_pb2
from mediagrid.users.v1 import user_service_pb2_grpc

from common.app import AppContext
from common.settings import Settings
from services.files.video.repository import VideoRepository
from services.jobs.job_types import registry
from services.jobs.models import JobSpec
from services.jobs.repository import JobRepository
from services.users.bootstrap import issue_service_token
from services.users.models import User
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.support.auth import bearer

# The caller kinds of every row, in the order the matrix file lists them.
CALLERS = ("anonymous", "owner", "other", "share_reader", "share_writer", "service", "admin")
# An extra caller kind for job types: the service owning an internal type.
OWNING_SERVICE = "owning_service"
# Every internal type the registry declares: the owning service holds the grant of each.
INTERNAL_JOB_TYPES = tuple(
    sorted(t.name for t in registry(Settings(environment="test")) if t.internal)
)

PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "authz-admin@example.com"
ADMIN_PASSWORD = "authz admin passphrase"
SERVICE_EMAIL = "authz-service@example.com"
OWNING_SERVICE_EMAIL = "authz-owning-service@example.com"
# Job types no job of the matrix uses: claims of one cell never take another cell's jobs.
LEASE_TYPE_PREFIX = "authz.lease"
Metadata = tuple[tuple[str, str], ...]
# An MP4 file type box and nothing playable: the upload checks the signature, and no worker
# runs in these tests to probe it.
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64)


class FixtureError(Exception):
    """A resource of the owner could not be made: the row says nothing about the caller."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """The running suite, its stubs and repositories, and the module-wide principals."""

    ctx: AppContext
    channel: grpc.aio.Channel
    password_hash: str
    admin: User
    owning_service: User
    admin_login_token: str
    users: user_service_pb2_grpc.UserServiceStub = field(init=False)
    jobs: job_service_pb2_grpc.JobServiceStub = field(init=False)
    workers: worker_service_pb2_grpc.WorkerServiceStub = field(init=False)
    files: file_service_pb2_grpc.FileServiceStub = field(init=False)
    videos: video_service_pb2_grpc.VideoServiceStub = field(init=False)
    user_repo: UserRepository = field(init=False)
    sessions: SessionManager = field(init=False)
    job_repo: JobRepository = field(init=False)
    video_repo: VideoRepository = field(init=False)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.users = user_service_pb2_grpc.UserServiceStub(self.channel)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.files = file_service_pb2_grpc.FileServiceStub(self.channel)
        self.videos = video_service_pb2_grpc.VideoServiceStub(self.channel)
        self.user_repo = UserRepository(self.ctx.pool)
        self.sessions = SessionManager(
            self.user_repo, self.ctx.settings, Passwords.from_settings(self.ctx.settings)
        )
        self.job_repo = JobRepository(self.ctx.pool)
        self.video_repo = VideoRepository(self.ctx.pool)

    async def new_user(self, kind: str) -> User:
        n = next(self.counter)
        return await self.user_repo.create_user(
            email=f"{kind.replace('_', '-')}-{n}@example.com",
            display_name=f"{kind} {n}",
            role="user",
            password_hash=self.password_hash,
        )

    async def token(self, user: User) -> str:
        token, _ = await self.sessions.open_session(user.id)
        return token

    async def cell(self) -> Cell:
        owner, other, reader, writer = [
            await self.new_user(kind) for kind in ("owner", "other", "share_reader", "share_writer")
        ]
        owner_token, session = await self.sessions.open_session(owner.id)
        return Cell(
            world=self,
            tag=uuid.uuid4().hex[:12],
            owner=owner,
            other=other,
            share_reader=reader,
            share_writer=writer,
            owner_token=owner_token,
            owner_session=session.name,
        )


async def start_world(ctx: AppContext, channel: grpc.aio.Channel, password_hash: str) -> World:
    """The module-wide principals: the bootstrap admin logs in for real; two services."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    login = await users.Login(users_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    repository = UserRepository(ctx.pool)
    admin = await repository.get_user(login.user.name.removeprefix("users/"))
    assert admin.role == "admin"
    await issue_service_token(ctx, OWNING_SERVICE_EMAIL)  # creates the service user
    credentials = await repository.find_credentials(OWNING_SERVICE_EMAIL)
    assert credentials is not None
    owning = credentials.user
    for job_type in INTERNAL_JOB_TYPES:
        await repository.grant(
            user_id=owning.id,
            permission="jobs.create",
            resource=f"job-types/{job_type}",
            creator="system",
        )
    return World(
        ctx=ctx,
        channel=channel,
        password_hash=password_hash,
        admin=admin,
        owning_service=owning,
        admin_login_token=login.token,
    )


@dataclass
class Cell:
    """One cell's owner, other users and (lazily) the owner's resources."""

    world: World
    tag: str
    owner: User
    other: User
    share_reader: User
    share_writer: User
    owner_token: str
    owner_session: str
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def owner_md(self) -> Metadata:
        return bearer(self.owner_token)

    async def metadata(self, caller: str) -> Metadata:
        """Fresh credentials of ``caller`` (none for anonymous)."""
        w = self.world
        if caller == "anonymous":
            return ()
        if caller == "owner":
            return self.owner_md
        if caller == "service":
            return bearer(await issue_service_token(w.ctx, SERVICE_EMAIL))
        if caller == "admin":
            return bearer(await w.token(w.admin))
        if caller == OWNING_SERVICE:
            return bearer(await w.token(w.owning_service))
        user: User = getattr(self, caller)
        return bearer(await w.token(user))

    async def once(self, key: str, make: Any) -> Any:
        if key not in self.cache:
            try:
                self.cache[key] = await make()
            except grpc.aio.AioRpcError as exc:  # must not pass for the caller's status
                raise FixtureError(f"making the owner's {key} failed: {exc}") from exc
        return self.cache[key]

    # --- files -----------------------------------------------------------------------

    async def file(self) -> file_pb2.File:
        """The owner's file, shared read-only with share_reader and read-write with share_writer."""

        async def make() -> file_pb2.File:
            file = await upload(self.world.files.Upload, self.owner_md, b"owner's bytes")
            for user, role in (
                (self.share_reader, file_service_pb2.SHARE_ROLE_READER),
                (self.share_writer, file_service_pb2.SHARE_ROLE_WRITER),
            ):
                await self.world.files.ShareFile(
                    file_service_pb2.ShareFileRequest(name=file.name, user=user.name, role=role),
                    metadata=self.owner_md,
                )
            return file

        return await self.once("file", make)  # type: ignore[no-any-return]

    async def upload_session(self, *, with_bytes: bool = False) -> str:
        """An upload session of the owner (``uploads/...``), its bytes in S3 when asked."""

        async def make() -> str:
            data = b"presigned bytes"
            created = await self.world.files.CreateUploadUrl(
                file_service_pb2.CreateUploadUrlRequest(
                    header=file_pb2.UploadHeader(
                        display_name="s.bin", size_bytes=len(data), sha256=sha256(data)
                    )
                ),
                metadata=self.owner_md,
            )
            if with_bytes:
                request = urllib.request.Request(
                    created.url, data=data, method="PUT", headers=dict(created.headers)
                )
                await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
            return str(created.upload)

        return await self.once(f"upload:{with_bytes}", make)  # type: ignore[no-any-return]

    async def broken_upload(self, data: bytes) -> str:
        """A streamed upload of ``data`` by the owner, broken before any byte was sent."""

        async def make() -> str:
            hold = asyncio.Event()

            async def requests() -> AsyncIterator[file_service_pb2.UploadRequest]:
                header = file_pb2.UploadHeader(
                    display_name="r.bin", size_bytes=len(data), sha256=sha256(data)
                )
                yield file_service_pb2.UploadRequest(header=header)
                await hold.wait()  # never set: the stream stays open until cancelled

            call = self.world.files.Upload(requests(), metadata=self.owner_md)
            upload = ""
            async for response in call:
                upload = response.progress.upload
                break
            call.cancel()
            assert upload, "the upload stream named no session"
            return upload

        return await self.once("broken_upload", make)  # type: ignore[no-any-return]

    async def video(self) -> file_pb2.File:
        """The owner's video (uploaded through UploadVideo), shared like ``file``."""

        async def make() -> file_pb2.File:
            video = await upload(self.world.videos.UploadVideo, self.owner_md, FAKE_MP4, video=True)
            for user, role in (
                (self.share_reader, file_service_pb2.SHARE_ROLE_READER),
                (self.share_writer, file_service_pb2.SHARE_ROLE_WRITER),
            ):
                await self.world.files.ShareFile(
                    file_service_pb2.ShareFileRequest(name=video.name, user=user.name, role=role),
                    metadata=self.owner_md,
                )
            return video

        return await self.once("video", make)  # type: ignore[no-any-return]

    async def video_jobs(self) -> tuple[str, str]:
        """The jobs the video's steps accept reports from (a made-up one while none is set)."""
        video = await self.video()
        record = await self.world.video_repo.get_video(video.name.removeprefix("files/"))
        return (
            record.probe.job or f"jobs/{uuid.uuid4()}",
            record.thumbnail_step.job or f"jobs/{uuid.uuid4()}",
        )

    # --- jobs ------------------------------------------------------------------------

    async def job(self) -> str:
        async def make() -> str:
            created = await self.world.jobs.CreateJob(
                job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop")),
                metadata=self.owner_md,
            )
            return str(created.job.name)

        return await self.once("job", make)  # type: ignore[no-any-return]

    async def cancelled_job(self) -> str:
        """A job of the owner that RetryJob may requeue."""

        async def make() -> str:
            name = await self.job()
            await self.world.jobs.CancelJob(
                job_service_pb2.CancelJobRequest(name=name), metadata=self.owner_md
            )
            return name

        return await self.once("cancelled_job", make)  # type: ignore[no-any-return]

    async def batch(self) -> str:
        async def make() -> str:
            created = await self.world.jobs.CreateBatch(
                job_service_pb2.CreateBatchRequest(jobs=[job_pb2.JobSpec(type="noop")]),
                metadata=self.owner_md,
            )
            return str(created.batch.name)

        return await self.once("batch", make)  # type: ignore[no-any-return]

    def lease_type(self) -> str:
        return f"{LEASE_TYPE_PREFIX}.t{self.tag}"

    async def lease(self) -> job_pb2.LeaseRef:
        """A running job of the owner, claimed by a worker (of a type only this cell uses)."""

        async def make() -> job_pb2.LeaseRef:
            repo = self.world.job_repo
            spec = JobSpec(type=self.lease_type(), max_attempts=3)
            await repo.create_job(self.owner.name, spec, None)
            [claimed] = await repo.claim("authz-worker", [spec.type], 1, 300)
            return job_pb2.LeaseRef(job=claimed.job.name, lease_id=str(claimed.job.lease_id))

        return await self.once("lease", make)  # type: ignore[no-any-return]

    # --- users -----------------------------------------------------------------------

    async def grant(self) -> str:
        async def make() -> str:
            grant, _ = await self.world.user_repo.grant(
                user_id=self.owner.id,
                permission="files.read",
                resource=f"files/{self.tag}",
                creator="system",
            )
            return grant.name

        return await self.once("grant", make)  # type: ignore[no-any-return]

    async def activity(self) -> str:
        async def make() -> str:
            entry = await self.world.user_repo.record_activity(
                actor=self.owner.name,
                actor_id=self.owner.id,
                action="files.read",
                resource=f"files/{self.tag}",
                request_id="",
                metadata={},
            )
            return str(entry.name)

        return await self.once("activity", make)  # type: ignore[no-any-return]

    async def api_key(self) -> str:
        """An API key of the owning service (keys are for service users only)."""

        async def make() -> str:
            from services.users.api_keys import ApiKeyManager, ApiKeyStore

            w = self.world
            _, key = await ApiKeyManager(ApiKeyStore(w.ctx.pool), w.user_repo).create(
                user_id=w.owning_service.id,
                creator=w.admin.name,
                display_name=self.tag,
                permissions=[],
                job_types=[],
                expire_time=None,
            )
            return key.name

        return await self.once("api_key", make)  # type: ignore[no-any-return]


async def upload(
    method: Any, metadata: Metadata, data: bytes, *, video: bool = False, **header: Any
) -> file_pb2.File:
    """Upload ``data`` through FileService.Upload or VideoService.UploadVideo; the File."""
    header.setdefault("display_name", "clip.mp4" if video else "data.bin")
    header.setdefault("content_type", "video/mp4" if video else "application/octet-stream")
    if video:
        messages: list[Any] = [
            video_service_pb2.UploadVideoRequest(header=file_pb2.UploadHeader(**header)),
            video_service_pb2.UploadVideoRequest(data=data),
        ]
    else:
        messages = [
            file_service_pb2.UploadRequest(header=file_pb2.UploadHeader(**header)),
            file_service_pb2.UploadRequest(data=data),
        ]

    async def requests() -> AsyncIterator[Any]:
        for message in messages:
            yield message

    last = None
    async for response in method(requests(), metadata=metadata):
        last = response
    assert last is not None and last.HasField("file"), last
    return last.file  # type: ignore[no-any-return]
