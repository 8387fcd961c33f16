"""Wires the files service: storage, repository, upload engine, FileService and the sweep.

The VideoService (``services/files/video``) always ships with it: it is started with the
same :class:`UploadDeps` (same bucket, repository and upload engine) and the files service's
own identity (``peers.files_identity``), and merged into the files service's instance.
"""

from __future__ import annotations

import logging

import grpc
from mediagrid.files.v1 import file_service_pb2

from common.app import AppContext, ServiceInstance
from common.dependencies import DATABASE, S3
from services.files.peers import GrpcJobAccess, GrpcUserDirectory, files_identity
from services.files.repository import FileRepository
from services.files.servicer import FileServicer, register
from services.files.storage import Storage
from services.files.sweep import sweep_forever
from services.files.upload import HashCache, UploadDeps
from services.files.video import app as video_app
from services.users.bootstrap import ServiceToken

log = logging.getLogger("mediagrid.files")

SERVICE_NAME = file_service_pb2.DESCRIPTOR.services_by_name["FileService"].full_name


async def build_deps(ctx: AppContext, identity: ServiceToken | None = None) -> UploadDeps:
    settings = ctx.settings
    storage = await Storage.open(
        ctx.aws,
        settings.bucket("files"),
        create=settings.is_local,
        dependency=ctx.dependencies.s3,
    )
    return UploadDeps(
        settings=settings,
        repo=FileRepository(ctx.pool),
        storage=storage,
        activity=ctx.activity,
        hash_cache=HashCache(settings.upload_hash_cache_entries),
        jobs=GrpcJobAccess(ctx),
        users=GrpcUserDirectory(ctx, identity or files_identity(ctx)),
    )


async def create(ctx: AppContext) -> ServiceInstance:
    identity = files_identity(ctx)
    deps = await build_deps(ctx, identity)
    servicer = FileServicer(deps)
    add_files = register(servicer)
    instances = [await video_app.create(ctx, deps, identity)]

    def add_all(server: grpc.aio.Server) -> None:
        add_files(server)
        for extra in instances:
            extra.register(server)

    async def close() -> None:
        for extra in instances:
            if extra.close is not None:
                await extra.close()
        await deps.storage.close()

    return ServiceInstance(
        name="files",
        service_names=[SERVICE_NAME, *(n for i in instances for n in i.service_names)],
        register=add_all,
        requires=[DATABASE, S3],
        public_methods=[m for i in instances for m in i.public_methods],
        background=[lambda: sweep_forever(deps), *(b for i in instances for b in i.background)],
        health_checks=[deps.storage.healthy, *(h for i in instances for h in i.health_checks)],
        close=close,
    )
