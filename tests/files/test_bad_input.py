"""Every bad input of the issue gets its documented status, and nothing partial is visible."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.files.v1 import file_service_pb2

from tests.files.conftest import (
    PART,
    Files,
    MiB,
    data_msgs,
    header_msg,
    random_bytes,
    sha,
    upload_outcome,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def bucket_state(files: Files) -> tuple[list[Any], list[Any]]:
    """(object versions, multipart uploads) in the files bucket."""
    bucket = files.ctx.settings.bucket("files")
    async with files.ctx.aws.s3() as s3:
        versions = await s3.list_object_versions(Bucket=bucket)
        uploads = await s3.list_multipart_uploads(Bucket=bucket)
    return versions.get("Versions", []), uploads.get("Uploads", [])


async def assert_nothing_visible(files: Files) -> None:
    versions, _ = await bucket_state(files)
    assert versions == []
    listed = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(show_deleted=True), metadata=files.md("alice")
    )
    assert list(listed.files) == []


async def test_empty_stream_and_data_before_header(files: Files) -> None:
    assert (await upload_outcome(files, []))[:2] == (INVALID, "HEADER_REQUIRED")
    outcome = await upload_outcome(files, [*data_msgs(b"abc"), header_msg()])
    assert outcome[:2] == (INVALID, "HEADER_REQUIRED")
    empty = file_service_pb2.UploadRequest()
    assert (await upload_outcome(files, [empty]))[:2] == (INVALID, "EMPTY_MESSAGE")
    await assert_nothing_visible(files)


async def test_header_twice(files: Files) -> None:
    outcome = await upload_outcome(files, [header_msg(), *data_msgs(b"abc"), header_msg()])
    assert outcome[:2] == (INVALID, "HEADER_REPEATED")
    await assert_nothing_visible(files)


async def test_chunk_over_the_message_limit(files: Files) -> None:
    limit = files.ctx.settings.grpc_max_message_bytes
    outcome = await upload_outcome(files, [header_msg(), *data_msgs(b"x" * (limit + 1), limit + 1)])
    assert outcome[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_nothing_visible(files)


async def test_declared_size_exceeded_fails_the_session(files: Files) -> None:
    data = random_bytes(2 * PART + 10)
    outcome = await upload_outcome(files, [header_msg(size_bytes=PART + 5), *data_msgs(data)])
    assert outcome[:2] == (INVALID, "SIZE_EXCEEDED")
    await assert_nothing_visible(files)
    _, uploads = await bucket_state(files)
    assert uploads == []  # the multipart upload was aborted at once
    upload = outcome[2][0].progress.upload
    status = await files.stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice")
    )
    assert status.upload.state == file_service_pb2.UPLOAD_STATE_FAILED


async def test_stream_shorter_than_declared_stays_resumable(files: Files) -> None:
    data = random_bytes(PART + 10)
    outcome = await upload_outcome(files, [header_msg(size_bytes=PART + 100), *data_msgs(data)])
    assert outcome[:2] == (INVALID, "SIZE_SHORT")
    status = await files.stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=outcome[2][0].progress.upload),
        metadata=files.md("alice"),
    )
    assert status.upload.state == file_service_pb2.UPLOAD_STATE_ACTIVE
    assert status.upload.committed_bytes == PART
    await assert_nothing_visible(files)


async def test_client_sha256_mismatch_commits_nothing(files: Files) -> None:
    for size in (10, 2 * PART + 3):
        data = random_bytes(size)
        outcome = await upload_outcome(files, [header_msg(sha256=sha(b"not it")), *data_msgs(data)])
        assert outcome[:2] == (grpc.StatusCode.DATA_LOSS, "SHA256_MISMATCH")
    await assert_nothing_visible(files)
    _, uploads = await bucket_state(files)
    assert uploads == []


BAD_NAMES = [
    "../etc/passwd",
    "a/../../b",
    "/abs",
    "nul\x00byte",
    "bell\x07",
    "tab\there",
    "x" * 2000,
    "",
]


async def test_bad_display_names(files: Files) -> None:
    for name in BAD_NAMES:
        outcome = await upload_outcome(files, [header_msg(display_name=name), *data_msgs(b"abc")])
        # NUL never reaches the service's own rule: the edge's hygiene layer refuses it.
        reason = "NUL_IN_STRING" if "\x00" in name else "INVALID_DISPLAY_NAME"
        assert outcome[:2] == (INVALID, reason), name
    await assert_nothing_visible(files)


async def test_harmless_odd_names_stay_metadata(files: Files) -> None:
    file, _ = await files.upload(b"abc", display_name="dir/ü ..name.txt")
    assert file.display_name == "dir/ü ..name.txt"
    assert file.storage.key == f"users/alice/{file.name.split('/')[1]}/content"


LYING_TYPES = [
    ("image/png", b"GIF89a not a png at all", "CONTENT_TYPE_MISMATCH"),
    ("video/mp4", b"\x00" * 64, "CONTENT_TYPE_MISMATCH"),
    ("not a type", b"abc", "INVALID_CONTENT_TYPE"),
]


async def test_content_types_that_lie(files: Files) -> None:
    for content_type, data, reason in LYING_TYPES:
        outcome = await upload_outcome(
            files, [header_msg(content_type=content_type), *data_msgs(data)]
        )
        assert outcome[:2] == (INVALID, reason), content_type
    await assert_nothing_visible(files)


async def test_content_type_checked_on_first_bytes_of_large_upload(files: Files) -> None:
    data = random_bytes(PART + 1)
    outcome = await upload_outcome(files, [header_msg(content_type="image/png"), *data_msgs(data)])
    assert outcome[:2] == (INVALID, "CONTENT_TYPE_MISMATCH")
    _, uploads = await bucket_state(files)
    assert uploads == []


async def test_true_content_type_is_accepted(files: Files) -> None:
    png = b"\x89PNG\r\n\x1a\n" + random_bytes(100)
    file, _ = await files.upload(png, content_type="IMAGE/PNG")
    assert file.content_type == "image/png"


BAD_HEADERS: list[tuple[dict[str, Any], str]] = [
    ({"sha256": "xyz"}, "INVALID_SHA256"),
    ({"size_bytes": -1}, "INVALID_SIZE"),
    ({"job": "jobs/../x"}, "INVALID_NAME"),
    ({"parent": "files/nope"}, "INVALID_NAME"),
    ({"upload": "uploads/../../x"}, "INVALID_NAME"),
    ({"offset": 5}, "INVALID_OFFSET"),
    ({"labels": {"Bad Key": "v"}}, "INVALID_LABELS"),
]


async def test_bad_header_fields(files: Files) -> None:
    for fields, reason in BAD_HEADERS:
        outcome = await upload_outcome(files, [header_msg(**fields), *data_msgs(b"abc")])
        assert outcome[:2] == (INVALID, reason), fields


async def test_unknown_version_and_range_past_end(files: Files) -> None:
    file, _ = await files.upload(b"hello world")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.download(file.name, version_id="no-such-version")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.CreateDownloadUrl(
            file_service_pb2.CreateDownloadUrlRequest(name=file.name, version_id="nope"),
            metadata=files.md("alice"),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for offset, length in [(12, 0), (5, 7), (0, 12)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await files.download(file.name, offset=offset, length=length)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert await files.download(file.name, offset=6, length=5) == b"world"
    assert await files.download(file.name, offset=11) == b""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.download(file.name, offset=-1)
    assert caught.value.code() == INVALID


async def test_malformed_names(files: Files) -> None:
    for name in ["", "files/", "files/../x", "files/ABC", "uploads/0123"]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await files.stub.GetFile(
                file_service_pb2.GetFileRequest(name=name), metadata=files.md("alice")
            )
        assert caught.value.code() == INVALID


async def test_large_download_streams_in_chunks(files: Files) -> None:
    data = random_bytes(3 * MiB + 5)
    file, _ = await files.upload(data)
    sizes = [
        len(r.data)
        async for r in files.stub.Download(
            file_service_pb2.DownloadRequest(name=file.name), metadata=files.md("alice")
        )
    ]
    assert sizes[0] == 0 and max(sizes) <= files.ctx.settings.download_chunk_bytes
    assert sum(sizes) == len(data)


async def _create_upload_url_error(files: Files, size: int) -> grpc.aio.AioRpcError:
    from mediagrid.files.v1 import file_pb2

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(
                header=file_pb2.UploadHeader(
                    display_name="a.bin", size_bytes=size, sha256=sha(b"x")
                )
            ),
            metadata=files.md("alice"),
        )
    return caught.value


async def test_presigned_upload_needs_a_size_within_the_limit(suite: Any) -> None:
    from common.grpc_errors import bad_request, error_info
    from tests.files.conftest import start_files

    files = await start_files(suite, upload_max_bytes=MiB)
    for size, reason in [(0, "SIZE_REQUIRED"), (-1, "INVALID_SIZE"), (MiB + 1, "FILE_TOO_LARGE")]:
        error = await _create_upload_url_error(files, size)
        assert error.code() == INVALID, size
        info, bad = error_info(error), bad_request(error)
        assert info is not None and info.reason == reason, size
        assert bad is not None and [v.field for v in bad.field_violations] == ["header.size_bytes"]
    versions, _ = await bucket_state(files)
    assert versions == []


@given(value=st.integers(-(2**63), 2**63 - 1), maximum=st.integers(1, 2**50))
def test_required_size_is_between_one_byte_and_the_maximum(value: int, maximum: int) -> None:
    from common.errors import InvalidArgument
    from services.files import validation

    try:
        assert validation.required_size(value, maximum) == value
    except InvalidArgument as error:
        assert not 1 <= value <= maximum
        expected = (
            "SIZE_REQUIRED" if value == 0 else "INVALID_SIZE" if value < 0 else "FILE_TOO_LARGE"
        )
        assert error.reason == expected
    else:
        assert 1 <= value <= maximum
