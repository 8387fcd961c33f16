"""Builds the VideoService for the files service (``services/files/app.py`` wires it in).

Integration::

    servicer, register, name = await create_video_service(ctx, uploads=..., jobs=...)
    # ServiceInstance(service_names=[..., name], register=lambda s: (files(s), register(s)))
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from mediagrid.files.v1 import video_pb2, video_pb2_grpc

from common.app import AppContext
from services.files.repository import FilesRepository
from services.files.video.ports import VideoJobs, VideoUploads
from services.files.video.repository import VideoRepository
from services.files.video.servicer import VideoServicer

SERVICE_NAME: str = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


async def create_video_service(
    ctx: AppContext, *, uploads: VideoUploads, jobs: VideoJobs
) -> tuple[VideoServicer, Callable[[grpc.aio.Server], None], str]:
    """The servicer, a function adding it to a server, and its fully qualified name."""
    servicer = VideoServicer(
        ctx,
        VideoRepository(ctx.pool),
        files=FilesRepository(ctx.pool),
        presigner=ctx.aws.presigner(),
        uploads=uploads,
        jobs=jobs,
    )

    def register(server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)

    return servicer, register, SERVICE_NAME
