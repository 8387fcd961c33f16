"""A running suite's /metrics after an upload, a download and processed jobs: the names and
labels the dashboards and alarms rely on are there, with the values the calls produced."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from mediagrid.files.v1 import file_pb2, files_pb2, files_pb2_grpc, video_pb2, video_pb2_grpc

from common.runtime import running_suite
from common.settings import Settings
from common.telemetry import configure_telemetry
from services.jobs.worker.embedded import embedded_worker
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.e2e.test_suite_e2e import SUCCEEDED, eventually, upload_requests
from tests.support.auth import bearer
from tests.support.proxy import free_port
from tests.video.clips import make_clip


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
            repository = UserRepository(ctx.pool)
            sessions = SessionManager(
                repository, ctx.settings, Passwords.from_settings(ctx.settings)
            )
            owner = await repository.create_user(
                email="metered@example.com", display_name="M", role="user", password_hash=None
            )
            token, _ = await sessions.open_session(owner.id)
            files = files_pb2_grpc.FileServiceStub(channel)
            data = b"m" * 300_000

            async def file_requests():  # type: ignore[no-untyped-def]
                yield files_pb2.UploadRequest(
                    header=file_pb2.UploadHeader(display_name="m.bin", size_bytes=len(data))
                )
                yield files_pb2.UploadRequest(data=data)

            stored = None
            async for response in files.Upload(file_requests(), metadata=bearer(token)):
                if response.WhichOneof("payload") == "file":
                    stored = response.file
            assert stored is not None
            got = b""
            async for piece in files.Download(
                files_pb2.DownloadRequest(name=stored.name), metadata=bearer(token)
            ):
                got += piece.data
            assert got == data
            videos = video_pb2_grpc.VideoServiceStub(channel)
            async with embedded_worker(ctx.settings, server, ctx):
                video = None
                async for response in videos.UploadVideo(
                    upload_requests(make_clip(seconds=1.0, fps=10, width=160, height=120)),
                    metadata=bearer(token),
                ):
                    if response.WhichOneof("item") == "file":
                        video = response.file
                assert video is not None
                name = "videos/" + video.name.removeprefix("files/")

                async def processed() -> bool:
                    found = (
                        await videos.GetVideo(
                            video_pb2.GetVideoRequest(name=name), metadata=bearer(token)
                        )
                    ).video
                    return bool(
                        found.probe.state == SUCCEEDED and found.thumbnail_step.state == SUCCEEDED
                    )

                await eventually(processed, what="the probe and thumbnail jobs")
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
