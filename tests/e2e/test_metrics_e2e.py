"""A running suite's /metrics after an upload, a download and processed jobs: the names and
labels the dashboards and alarms rely on are there, with the values the calls produced."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2_grpc,
)

from common.runtime import running_suite
from common.settings import Settings
from common.telemetry import configure_telemetry
from services.jobs.worker.embedded import embedded_worker
from tests.e2e.e2e_support import processed_video, user_token
from tests.support.auth import bearer
from tests.support.proxy import free_port


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode()).splitlines()


def value(lines: list[str], name: str, *labels: str) -> float:
    """The sum of ``name``'s samples whose labels include every one of ``labels``."""
    total = 0.0
    for line in lines:
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_of_a_working_suite(settings: Settings) -> None:
    port = free_port()
    configured = settings.model_copy(
        update={
            "metrics_exporter": "prometheus",
            "metrics_port": port,
            "job_metrics_interval_seconds": 0.2,
            "video_thumbnail_times_seconds": [0.0],
        }
    )
    telemetry = configure_telemetry(configured, set_global=False, instrument=False)
    try:
        async with (
            running_suite(configured, ("all",), port=0) as (server, ctx),
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            token = await user_token(ctx, "metered@example.com")
            files = file_service_pb2_grpc.FileServiceStub(channel)
            data = b"m" * 300_000

            async def file_requests():  # type: ignore[no-untyped-def]
                yield file_service_pb2.UploadRequest(
                    header=file_pb2.UploadHeader(display_name="m.bin", size_bytes=len(data))
                )
                yield file_service_pb2.UploadRequest(data=data)

            stored = None
            async for response in files.Upload(file_requests(), metadata=bearer(token)):
                if response.WhichOneof("payload") == "file":
                    stored = response.file
            assert stored is not None
            got = b""
            async for piece in files.Download(
                file_service_pb2.DownloadRequest(name=stored.name), metadata=bearer(token)
            ):
                got += piece.data
            assert got == data
            async with embedded_worker(ctx.settings, server, ctx):
                await processed_video(video_service_pb2_grpc.VideoServiceStub(channel), token)
            await asyncio.sleep(0.5)  # a refresh of the queue gauges after the jobs ended
            lines = await asyncio.to_thread(scrape, port)
    finally:
        telemetry.shutdown()
    upload = 'rpc_method="Upload"'
    assert (
        value(lines, "rpc_server_duration_milliseconds_count", upload, 'rpc_grpc_status_code="0"')
        == 1
    )
    assert value(lines, "rpc_server_duration_milliseconds_count", 'rpc_method="ClaimJobs"') >= 1
    assert value(lines, "rpc_client_duration_milliseconds_count", 'rpc_method="ClaimJobs"') >= 1
    assert value(lines, "mediagrid_files_transfer_bytes_total", 'direction="upload"') >= len(data)
    assert value(lines, "mediagrid_files_transfer_bytes_total", 'direction="download"') == len(data)
    assert (
        value(lines, "mediagrid_jobs_outcomes_total", 'type="video.probe"', 'outcome="succeeded"')
        == 1
    )
    assert (
        value(
            lines, "mediagrid_jobs_outcomes_total", 'type="video.thumbnail"', 'outcome="succeeded"'
        )
        == 1
    )
    assert value(lines, "mediagrid_jobs_queue_depth", 'type="all"', 'state="queued"') == 0
    assert any(line.startswith("mediagrid_jobs_oldest_queued_age") for line in lines)
    assert (
        value(
            lines, "mediagrid_dependency_duration_seconds_count", 'dependency="s3"', 'outcome="ok"'
        )
        >= 1
    )
    assert (
        value(lines, "mediagrid_dependency_duration_seconds_count", 'dependency="postgresql"') >= 1
    )
    assert value(lines, "mediagrid_auth_cache_total") >= 1
    assert value(lines, "mediagrid_breaker_state", 'dependency="s3"') == 0
    assert any(line.startswith("mediagrid_db_pool_connections") for line in lines)
