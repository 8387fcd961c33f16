"""A stream killed at any point resumes from the committed offset into identical bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from mediagrid.files.v1 import file_pb2, file_service_pb2

from common.grpc_errors import error_info
from tests.files.conftest import (
    PART,
    Files,
    MiB,
    chunks,
    handshake_upload,
    random_bytes,
    sha,
    start_files,
    upload_requests,
)
from tests.support.hypo import relaxed

SIZE = 3 * PART + 777


async def upload_until_killed(files: Files, data: bytes, cut: int, **header: Any) -> str:
    """Send the header and ``cut`` bytes, then break the stream; return the upload name."""
    hold = asyncio.Event()

    async def requests() -> AsyncIterator[file_service_pb2.UploadRequest]:
        yield file_service_pb2.UploadRequest(
            header=file_pb2.UploadHeader(display_name="big.bin", **header)
        )
        for piece in chunks(data[:cut], MiB):
            yield file_service_pb2.UploadRequest(data=piece)
        await hold.wait()  # never set: the stream stays open until cancelled

    call = files.stub.Upload(requests(), metadata=files.md("alice"))
    upload = ""
    async for response in call:
        upload = upload or response.progress.upload
        if response.progress.received_bytes >= cut:
            break
    call.cancel()
    return upload


async def status_once_committed(
    files: Files, upload: str, offset: int
) -> file_service_pb2.GetUploadStatusResponse:
    """GetUploadStatus once ``offset`` bytes are committed (it answers at once with what is
    committed, so parts of the broken stream still landing show up in a later answer)."""
    for _ in range(200):
        status = await files.stub.GetUploadStatus(
            file_service_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice")
        )
        if status.upload.committed_bytes >= offset:
            break
        await asyncio.sleep(0.05)
    return status


async def resume(files: Files, upload: str, data: bytes) -> file_pb2.File:
    """Resume like a client does: ask for the offset, retry when it moved meanwhile."""
    status = await files.stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice")
    )
    offset = status.upload.committed_bytes
    for _ in range(5):
        # A whole number of parts, or everything (the short last part is recorded too).
        assert (offset % PART == 0 or offset == len(data)) and offset <= len(data)
        header = file_pb2.UploadHeader(upload=upload, offset=offset)
        try:
            responses = await handshake_upload(files, header, data[offset:])
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if info is None or info.reason != "WRONG_OFFSET":
                raise
            offset = int(info.metadata["committed_offset"])
            continue
        assert responses[0].progress.committed_bytes == offset
        return responses[-1].file
    raise AssertionError("the offset kept moving")


async def test_resume_after_kill_at_random_points(files: Files) -> None:
    loop = asyncio.get_running_loop()
    data = random_bytes(SIZE)

    @relaxed(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.integers(min_value=0, max_value=SIZE))
    def check(cut: int) -> None:
        async def scenario() -> None:
            upload = await upload_until_killed(files, data, cut, size_bytes=SIZE, sha256=sha(data))
            file = await resume(files, upload, data)
            assert file.sha256 == sha(data)
            assert await files.download(file.name) == data

        asyncio.run_coroutine_threadsafe(scenario(), loop).result(timeout=120)

    await asyncio.to_thread(check)


async def test_resume_in_another_process_reads_back_to_verify(suite: Any) -> None:
    # No hash state cache: as if the resume reached another replica.
    files = await start_files(suite, upload_hash_cache_entries=0)
    data = random_bytes(2 * PART + 99)
    upload = await upload_until_killed(files, data, 2 * PART + 50, sha256=sha(data))
    file = await resume(files, upload, data)
    assert file.sha256 == sha(data)
    assert await files.download(file.name) == data


async def test_resume_with_wrong_sha_commits_nothing(suite: Any) -> None:
    files = await start_files(suite, upload_hash_cache_entries=0)
    data = random_bytes(2 * PART + 10)
    upload = await upload_until_killed(files, data, 2 * PART + 5, sha256=sha(b"other"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await resume(files, upload, data)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    listed = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(), metadata=files.md("alice")
    )
    assert list(listed.files) == []
    async with files.ctx.aws.s3() as s3:
        versions = await s3.list_object_versions(Bucket=files.ctx.settings.bucket("files"))
    assert versions.get("Versions", []) == []


async def test_wrong_offset_names_the_committed_one(files: Files) -> None:
    data = random_bytes(PART + 10)
    upload = await upload_until_killed(files, data, PART + 5)
    status = await status_once_committed(files, upload, PART)
    header = file_pb2.UploadHeader(upload=upload, offset=status.upload.committed_bytes + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in files.stub.Upload(upload_requests(header, []), metadata=files.md("alice")):
            pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None and info.reason == "WRONG_OFFSET"
    assert info.metadata["committed_offset"] == str(status.upload.committed_bytes)


async def test_resume_when_every_byte_is_already_committed(files: Files) -> None:
    data = random_bytes(2 * PART)
    upload = await upload_until_killed(files, data, 2 * PART, size_bytes=2 * PART)
    status = await status_once_committed(files, upload, 2 * PART)
    assert status.upload.committed_bytes == 2 * PART  # the drained parts landed
    file = await resume(files, upload, data)
    assert file.sha256 == sha(data)
    assert await files.download(file.name) == data
