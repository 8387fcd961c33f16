"""Attaching an upload to a job needs access to the job; a share's grantee must exist.

Real users, jobs and files services in one process: the files service asks the jobs service
(with the caller's token) whether the caller may see the job, and the users service (with its
own service identity) whether the grantee exists.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)

from common.grpc_errors import error_info
from services.jobs.client import JobsClient
from tests.files.conftest import Files, upload_outcome
from tests.support.auth import bearer
from tests.support.people import People, start_all
from tests.video.clips import make_clip


async def rpc_error(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    return caught.value.code(), info.reason if info else ""


def files_of(people: People) -> Files:
    return Files(
        file_service_pb2_grpc.FileServiceStub(people.channel),
        people.ctx,
        people.server,
        people.channel,
    )


def header(job: str, **fields: Any) -> file_pb2.UploadHeader:
    fields.setdefault("display_name", "result.bin")
    fields.setdefault("content_type", "application/octet-stream")
    return file_pb2.UploadHeader(job=job, **fields)


async def upload_count(people: People) -> int:
    return int(await people.ctx.pool.fetchval("SELECT count(*) FROM files.upload_sessions"))


async def test_an_upload_is_attached_only_to_a_job_the_caller_may_access(suite: Any) -> None:
    people = await start_all(suite)
    files = files_of(people)
    _, alice = await people.add()
    _, bob = await people.add()
    alices_job = await JobsClient(people.channel, bearer(alice)).create_job("noop")
    bobs_job = await JobsClient(people.channel, bearer(bob)).create_job("noop")

    refused = [
        file_service_pb2.UploadRequest(header=header(alices_job.name)),
        file_service_pb2.UploadRequest(data=b"bob's bytes"),
    ]
    code, reason, responses = await upload_outcome(files, refused, who=bob)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_NOT_ACCESSIBLE")
    assert responses == []  # refused before the first byte: not even the header's progress
    assert await upload_count(people) == 0

    code, reason = await rpc_error(
        files.stub.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(
                header=header(alices_job.name, size_bytes=3, sha256="0" * 64)
            ),
            metadata=bearer(bob),
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_NOT_ACCESSIBLE")
    assert await upload_count(people) == 0

    file, _ = await files.upload(b"bob's result", who=bob, job=bobs_job.name)
    assert file.job == bobs_job.name
    assert file.storage.key.startswith(f"users/{file.owner.removeprefix('users/')}/jobs/")


async def test_a_video_upload_is_attached_only_to_an_accessible_job(suite: Any) -> None:
    people = await start_all(suite)
    _, alice = await people.add()
    _, bob = await people.add()
    alices_job = await JobsClient(people.channel, bearer(alice)).create_job("noop")
    videos = video_service_pb2_grpc.VideoServiceStub(people.channel)

    async def requests() -> Any:
        yield video_service_pb2.UploadVideoRequest(
            header=header(alices_job.name, display_name="clip.mp4", content_type="video/mp4")
        )
        yield video_service_pb2.UploadVideoRequest(data=make_clip(seconds=0.5))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in videos.UploadVideo(requests(), metadata=bearer(bob)):
            pass
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info is not None and info.reason == "JOB_NOT_ACCESSIBLE"
    assert await upload_count(people) == 0


async def test_attaching_to_a_job_without_a_jobs_service_is_unavailable(files: Files) -> None:
    messages = [file_service_pb2.UploadRequest(header=header("jobs/j1"))]
    code, reason, responses = await upload_outcome(files, messages)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert responses == []


async def test_share_needs_an_existing_grantee_after_the_callers_own_right(suite: Any) -> None:
    people = await start_all(suite)
    files = files_of(people)
    _, alice = await people.add()
    bob_user, bob = await people.add()
    gone, _ = await people.add()
    await people.repository.delete_user(gone.id)
    file, _ = await files.upload(b"alice's", who=alice)

    def share(user: str, token: str) -> Any:
        return files.stub.ShareFile(
            file_service_pb2.ShareFileRequest(
                name=file.name, user=user, role=file_service_pb2.SHARE_ROLE_READER
            ),
            metadata=bearer(token),
        )

    # Bob may not share Alice's file: that is the answer, whoever the grantee is.
    assert await rpc_error(share("users/nobody", bob)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "FILE_ACCESS_DENIED",
    )
    for unknown in ("users/nobody", f"users/{gone.id}", "users/Not-A-Users-Id", "users/me"):
        assert await rpc_error(share(unknown, alice)) == (
            grpc.StatusCode.NOT_FOUND,
            "GRANTEE_NOT_FOUND",
        ), unknown
    await share(f"users/{bob_user.id}", alice)
    shares = await files.stub.ListFileShares(
        file_service_pb2.ListFileSharesRequest(name=file.name), metadata=bearer(alice)
    )
    assert [s.user for s in shares.shares] == [f"users/{bob_user.id}"]
