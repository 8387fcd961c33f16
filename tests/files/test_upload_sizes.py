"""Sizes that are not a whole number of parts: the committed offset never passes the data, the
finished upload reports every byte, and a stream broken between its last data message and the
final ``File`` can always be finished."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from mediagrid.files.v1 import file_pb2, file_service_pb2

from common.grpc_errors import error_info
from tests.files.conftest import PART, Files, chunks, random_bytes, sha
from tests.support.hypo import relaxed

# Up to three parts, never a whole number of them: the last part is short (or the only one).
SIZES = st.integers(min_value=1, max_value=3 * PART - 1).filter(lambda n: n % PART != 0)
CHUNKS = st.sampled_from([64 * 1024, 1024 * 1024 - 1, 3 * 1024 * 1024])
Upload = file_service_pb2.Upload


async def status_of(files: Files, upload: str) -> Upload:
    response = await files.stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice"), timeout=10
    )
    return response.upload


def assert_sane(upload: Upload, size: int) -> None:
    """An offset a client can resume from: whole parts, or every byte (the short last part)."""
    assert upload.committed_bytes <= size
    assert upload.committed_bytes % PART == 0 or upload.committed_bytes == size


async def open_and_send(files: Files, data: bytes, chunk: int) -> tuple[Any, str]:
    """Start an upload, send every byte and wait until the server has received them all."""
    call = files.stub.Upload(metadata=files.md("alice"))
    header = file_pb2.UploadHeader(display_name="odd.bin", size_bytes=len(data), sha256=sha(data))
    await call.write(file_service_pb2.UploadRequest(header=header))
    first = await call.read()
    upload = first.progress.upload
    for piece in chunks(data, chunk):
        await call.write(file_service_pb2.UploadRequest(data=piece))
    last = first.progress
    while last.received_bytes < len(data):
        last = (await call.read()).progress
        assert last.committed_bytes <= len(data)
    return call, upload


async def read_all(call: Any) -> list[file_service_pb2.UploadResponse]:
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


async def finish_broken(
    files: Files, upload: str, data: bytes
) -> list[file_service_pb2.UploadResponse]:
    """Finish an upload whose stream broke, as a client does: ask where it stands, resume
    from the committed offset (or find it completed by the broken stream itself)."""
    for _ in range(20):
        status = await status_of(files, upload)
        assert_sane(status, len(data))
        if status.state == file_service_pb2.UPLOAD_STATE_COMPLETED:
            file = await files.stub.GetFile(
                file_service_pb2.GetFileRequest(name=status.file), metadata=files.md("alice")
            )
            return [file_service_pb2.UploadResponse(file=file)]
        assert status.state == file_service_pb2.UPLOAD_STATE_ACTIVE
        offset = status.committed_bytes
        call = files.stub.Upload(metadata=files.md("alice"))
        try:
            header = file_pb2.UploadHeader(upload=upload, offset=offset)
            await call.write(file_service_pb2.UploadRequest(header=header))
            for piece in chunks(data[offset:], 1024 * 1024):
                await call.write(file_service_pb2.UploadRequest(data=piece))
            await call.done_writing()
            return await read_all(call)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            # The broken stream's parts were still landing, or it was still committing.
            if info is None or info.reason not in ("WRONG_OFFSET", "UPLOAD_NOT_ACTIVE"):
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"{upload} could not be finished")


async def check_finished(
    files: Files, upload: str, data: bytes, responses: list[file_service_pb2.UploadResponse]
) -> None:
    file = responses[-1].file
    assert file.size_bytes == len(data) and file.sha256 == sha(data)
    for response in responses[:-1]:
        assert 0 <= response.progress.committed_bytes <= len(data)
    if len(responses) > 1:  # this stream committed it: its last progress says so
        assert responses[-2].progress.committed_bytes == len(data)
    status = await status_of(files, upload)
    assert status.state == file_service_pb2.UPLOAD_STATE_COMPLETED
    assert status.committed_bytes == len(data)
    assert await files.download(file.name) == data


def run_examples(
    files: Files, scenario: Callable[[int, int], Awaitable[None]], examples: int
) -> Awaitable[None]:
    loop = asyncio.get_running_loop()

    @relaxed(max_examples=examples, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(size=SIZES, chunk=CHUNKS)
    def check(size: int, chunk: int) -> None:
        asyncio.run_coroutine_threadsafe(scenario(size, chunk), loop).result(timeout=120)

    return asyncio.to_thread(check)


async def test_a_finished_upload_reports_every_byte_committed(files: Files) -> None:
    async def scenario(size: int, chunk: int) -> None:
        data = random_bytes(size)
        call, upload = await open_and_send(files, data, chunk)
        await call.done_writing()
        responses = await read_all(call)
        await check_finished(files, upload, data, responses)

    await run_examples(files, scenario, examples=8)


async def test_a_break_after_the_last_data_message_resumes_and_finishes(files: Files) -> None:
    async def scenario(size: int, chunk: int) -> None:
        data = random_bytes(size)
        call, upload = await open_and_send(files, data, chunk)
        call.cancel()  # every byte arrived; the stream never ended, no File came back
        responses = await finish_broken(files, upload, data)
        assert len(responses) > 1  # the session was still active: the resume committed it
        await check_finished(files, upload, data, responses)

    await run_examples(files, scenario, examples=8)


async def test_a_break_after_the_stream_ended_resumes_or_is_already_finished(
    files: Files,
) -> None:
    async def scenario(size: int, chunk: int) -> None:
        data = random_bytes(size)
        call, upload = await open_and_send(files, data, chunk)
        await call.done_writing()
        call.cancel()  # the server may be anywhere in finishing: the File never arrives
        responses = await finish_broken(files, upload, data)
        await check_finished(files, upload, data, responses)

    await run_examples(files, scenario, examples=8)
