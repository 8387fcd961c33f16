"""Wires the VideoService into the files service: its two ports get their real adapters.

- uploads go through the files service's own upload engine (same bucket, repository,
  sessions and resume rules as ``FileService.Upload``), with the video transfer profile;
- jobs are created in the jobs service over gRPC by the files service's own service account
  (``services/files/peers.py``), which owns the ``video.*`` job types, with ``owner`` the
  video's owner (the uploading user for a new video): the jobs are theirs (they see and
  watch them, the jobs count as theirs), and the worker's handler only acts on that owner's
  objects. A user cannot create those job types for themselves. The call goes through the
  jobs peer dependency (``common.peer_calls``: bounded, refused at once while its breaker
  is open).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from mediagrid.files.v1 import video_service_pb2, video_service_pb2_grpc

from common.app import AppContext, ServiceInstance
from common.context import Principal
from common.peer_calls import call_peer
from services.files.peers import JOBS
from services.files.ports import JOBS_SERVICE
from services.files.repository import FileRepository
from services.files.upload import TransferProfile, UploadDeps, run_upload
from services.files.video.ports import UploadItem as VideoUploadItem
from services.files.video.ports import UploadOutput, VideoJobs, VideoUploads
from services.files.video.repository import VideoRepository
from services.files.video.servicer import VideoServicer, is_video_content_type
from services.jobs.client import JobsClient
from services.users.bootstrap import ServiceToken

SERVICE_NAME: str = video_service_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


class EngineUploads:
    """``VideoUploads`` backed by the files upload engine."""

    def __init__(self, deps: UploadDeps) -> None:
        self.deps = deps

    async def upload(
        self,
        principal: Principal,
        items: AsyncIterator[VideoUploadItem],
        *,
        part_size_bytes: int,
        concurrency: int,
        kind: str,
    ) -> AsyncIterator[UploadOutput]:
        profile = TransferProfile(
            part_size_bytes,
            concurrency,
            is_video_content_type,
            kind="video" if kind == "video" else "file",
        )
        async for output in run_upload(self.deps, principal, items, profile):
            yield output


class GrpcVideoJobs:
    """``VideoJobs`` backed by the jobs service's CreateJob, as the files service."""

    def __init__(self, ctx: AppContext, identity: ServiceToken) -> None:
        self.ctx = ctx
        self.identity = identity

    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any],
        *,
        file: str,
        owner: str,
    ) -> str:
        channel = self.ctx.peer_channel(JOBS, JOBS_SERVICE)
        jobs = self.ctx.dependencies.peer(JOBS)
        # No request_id: RegenerateThumbnails must create a new job each time it is asked.
        job = await self.identity.call(
            lambda metadata: call_peer(
                jobs,
                lambda timeout: JobsClient(channel, timeout=timeout).create_job(
                    job_type, dict(payload), files=[file], owner=owner, metadata=metadata
                ),
                what="CreateJob",
            )
        )
        return str(job.name)


async def create_video_service(
    ctx: AppContext, *, uploads: VideoUploads, jobs: VideoJobs
) -> tuple[VideoServicer, Callable[[grpc.aio.Server], None], str]:
    """The servicer, a function adding it to a server, and its fully qualified name."""
    servicer = VideoServicer(
        ctx,
        VideoRepository(ctx.pool),
        files=FileRepository(ctx.pool),
        presigner=ctx.aws.presigner(),
        uploads=uploads,
        jobs=jobs,
    )

    def register(server: grpc.aio.Server) -> None:
        video_service_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    return servicer, register, SERVICE_NAME


async def create(ctx: AppContext, deps: UploadDeps, identity: ServiceToken) -> ServiceInstance:
    """The VideoService as an instance the files service serves beside the FileService."""
    _servicer, register, name = await create_video_service(
        ctx, uploads=EngineUploads(deps), jobs=GrpcVideoJobs(ctx, identity)
    )
    return ServiceInstance(name="videos", service_names=[name], register=register)
