"""Wiring of the jobs service: repository, notifier, servicers, sweeps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from mediagrid.jobs.v1 import job_service_pb2_grpc, worker_service_pb2_grpc

from common.app import AppContext, ServiceInstance
from common.db import server_settings
from common.dependencies import DATABASE
from common.telemetry import get_meter, metrics_enabled
from services.jobs.job_servicer import JobServicer
from services.jobs.metrics import JobMetrics
from services.jobs.notifier import Notifier
from services.jobs.queue_metrics import QueueGauges
from services.jobs.repository import JobRepository
from services.jobs.retention import reaper_loop, retention_loop
from services.jobs.worker_servicer import WorkerServicer

WORKER_SERVICE = "mediagrid.jobs.v1.WorkerService"
SERVICE_NAMES = ["mediagrid.jobs.v1.JobService", WORKER_SERVICE]
# A worker calls these on a timer or as a long poll: logged at DEBUG when they succeed.
QUIET_METHODS = [f"/{WORKER_SERVICE}/{m}" for m in ("ClaimJobs", "Heartbeat", "ReportProgress")]


async def create(ctx: AppContext) -> ServiceInstance:
    settings = ctx.settings
    repo = JobRepository(ctx.pool)
    metrics = JobMetrics()

    async def connect() -> Any:
        return await asyncpg.connect(
            settings.database_dsn(),
            timeout=settings.db_connect_timeout_seconds,
            server_settings={
                **server_settings(settings),
                "application_name": "mediagrid-jobs-listen",
            },
        )

    notifier = Notifier(connect)
    await notifier.start()
    activity = ctx.activity
    jobs = JobServicer(repo, notifier, settings, activity, metrics)
    workers = WorkerServicer(repo, notifier, settings, activity, metrics)

    def register(server: grpc.aio.Server) -> None:
        job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)

    async def reaper() -> None:
        await reaper_loop(repo, settings, metrics)

    async def retention() -> None:
        await retention_loop(repo, settings)

    background: list[Callable[[], Awaitable[None]]] = [notifier.run, reaper, retention]
    if metrics_enabled():
        gauges = QueueGauges(ctx.pool, get_meter("mediagrid.jobs"))

        async def queue_metrics() -> None:
            await gauges.run(settings.job_metrics_interval_seconds)

        background.append(queue_metrics)

    return ServiceInstance(
        name="jobs",
        service_names=SERVICE_NAMES,
        register=register,
        requires=[DATABASE],
        quiet_methods=QUIET_METHODS,
        background=background,
        close=notifier.close,
    )
