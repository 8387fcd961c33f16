"""The files service creates the video jobs with its own service identity, for the uploader.

Real files and jobs services (and, where named, the users service) in one process: the jobs
are created by the files service's account (which holds the literal ``video.*`` grants) with
the uploader as their owner, so the uploader sees and counts them and nobody else does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from mediagrid.files.v1 import file_pb2, video_service_pb2, video_service_pb2_grpc
from pydantic import SecretStr

from common.context import Principal
from services.files.peers import FILES_SERVICE_ACCOUNT_EMAIL
from services.jobs.client import JobsClient
from tests.support.auth import StaticAuthenticator, bearer, principal
from tests.support.people import start_all
from tests.video.clips import make_clip

FAILED = video_service_pb2.PROCESSING_STATE_FAILED
PENDING = video_service_pb2.PROCESSING_STATE_PENDING


def requests(data: bytes) -> Iterator[video_service_pb2.UploadVideoRequest]:
    header = file_pb2.UploadHeader(display_name="clip.mp4", content_type="video/mp4")
    yield video_service_pb2.UploadVideoRequest(header=header)
    yield video_service_pb2.UploadVideoRequest(data=data)


async def upload(channel: grpc.aio.Channel, token: str) -> video_service_pb2.Video:
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    async for response in videos.UploadVideo(
        requests(make_clip(seconds=0.5)), metadata=bearer(token)
    ):
        if response.WhichOneof("payload") == "file":
            name = "videos/" + response.file.name.removeprefix("files/")
    reply = await videos.GetVideo(
        video_service_pb2.GetVideoRequest(name=name), metadata=bearer(token)
    )
    video: video_service_pb2.Video = reply.video
    return video


async def assert_jobs_are_the_uploaders(
    channel: grpc.aio.Channel, video: video_service_pb2.Video, owner: str, token: str, other: str
) -> None:
    assert video.probe.state == PENDING and video.thumbnail_step.state == PENDING
    client = JobsClient(channel, bearer(token))
    for step, job_type in ((video.probe, "video.probe"), (video.thumbnail_step, "video.thumbnail")):
        job = await client.get_job(step.job)
        assert (job.owner, job.type) == (owner, job_type)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.get_job(step.job, metadata=bearer(other))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    counts = await client.get_job_counts(owner)
    assert counts["JOB_STATE_QUEUED"] == 2


async def test_video_jobs_are_created_by_the_files_service_for_the_uploader(suite: Any) -> None:
    people = await start_all(suite)
    alice, alice_token = await people.add()
    _, bob_token = await people.add()
    video = await upload(people.channel, alice_token)
    await assert_jobs_are_the_uploaders(
        people.channel, video, f"users/{alice.id}", alice_token, bob_token
    )
    account = await people.repository.find_credentials(FILES_SERVICE_ACCOUNT_EMAIL)
    assert account is not None and account.user.role == "service"
    grants = await people.repository.list_grants(
        user_id=account.user.id, permission=None, resource=None, after=None, limit=10
    )
    assert sorted((g.permission, g.resource) for g in grants) == [
        ("jobs.create", "job-types/video.probe"),
        ("jobs.create", "job-types/video.thumbnail"),
    ]


def files_account() -> Principal:
    account = principal("files-svc", "service")
    return account.model_copy(
        update={
            "permissions": frozenset(
                {
                    "jobs.create:*",
                    "jobs.create:job-types/video.probe",
                    "jobs.create:job-types/video.thumbnail",
                }
            )
        }
    )


async def test_without_a_users_service_the_configured_service_token_is_used(suite: Any) -> None:
    tokens = {"alice": principal("alice"), "bob": principal("bob"), "files": files_account()}
    _, _, channel = await suite(
        "files", "jobs", authenticator=StaticAuthenticator(tokens), service_token=SecretStr("files")
    )
    video = await upload(channel, "alice")
    await assert_jobs_are_the_uploaders(channel, video, "users/alice", "alice", "bob")


async def test_without_any_service_identity_the_steps_fail_visibly(suite: Any) -> None:
    tokens = {"alice": principal("alice")}
    _, _, channel = await suite("files", "jobs", authenticator=StaticAuthenticator(tokens))
    video = await upload(channel, "alice")
    assert video.probe.state == FAILED and video.thumbnail_step.state == FAILED
    assert "no service identity" in video.probe.error
    counts = await JobsClient(channel, bearer("alice")).get_job_counts("users/alice")
    assert sum(counts.values()) == 0
