"""The hygiene layer in front of the FileService: NUL characters (also in a later message of
an upload stream) and out-of-range Durations are INVALID_ARGUMENT naming the field, before
any handler runs, with nothing logged and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from mediagrid.files.v1 import file_pb2, file_service_pb2

from tests.common.hygiene_support import Call, Case, check_cases, server_streaming, unary
from tests.files.conftest import Files, header_msg

NUL = "NUL_IN_STRING"
DUR = "DURATION_OUT_OF_RANGE"


def _upload(files: Files, *messages: file_service_pb2.UploadRequest) -> Call:
    async def requests() -> AsyncIterator[file_service_pb2.UploadRequest]:
        for message in messages:
            yield message

    async def call() -> Any:
        return [r async for r in files.stub.Upload(requests(), metadata=files.md("alice"))]

    return call


def _cases(files: Files, name: str) -> list[Case]:
    stub, md = files.stub, files.md("alice")
    data = file_service_pb2.UploadRequest(data=b"\x00" * 16)  # NUL is fine in bytes
    header = file_pb2.UploadHeader
    return [
        (
            "ListFiles content_type_prefix",
            unary(
                stub.ListFiles,
                file_service_pb2.ListFilesRequest(content_type_prefix="video/\x00"),
                md,
            ),
            NUL,
            "content_type_prefix",
        ),
        (
            "Download version_id",
            server_streaming(
                stub.Download, file_service_pb2.DownloadRequest(name=name, version_id="v\x00"), md
            ),
            NUL,
            "version_id",
        ),
        (
            "CreateDownloadUrl version_id",
            unary(
                stub.CreateDownloadUrl,
                file_service_pb2.CreateDownloadUrlRequest(name=name, version_id="\x00"),
                md,
            ),
            NUL,
            "version_id",
        ),
        (
            "CreateDownloadUrl ttl nanos 2e9",
            unary(
                stub.CreateDownloadUrl,
                file_service_pb2.CreateDownloadUrlRequest(
                    name=name, ttl=duration_pb2.Duration(nanos=2_000_000_000)
                ),
                md,
            ),
            DUR,
            "ttl",
        ),
        (
            "RestoreFileVersion version_id",
            unary(
                stub.RestoreFileVersion,
                file_service_pb2.RestoreFileVersionRequest(name=name, version_id="x\x00"),
                md,
            ),
            NUL,
            "version_id",
        ),
        (
            "ShareFile user",
            unary(
                stub.ShareFile, file_service_pb2.ShareFileRequest(name=name, user="users/\x00"), md
            ),
            NUL,
            "user",
        ),
        (
            "UpdateFile display_name",
            unary(
                stub.UpdateFile,
                file_service_pb2.UpdateFileRequest(
                    file=file_pb2.File(name=name, display_name="a\x00b"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
                md,
            ),
            NUL,
            "file.display_name",
        ),
        (
            "CreateUploadUrl label",
            unary(
                stub.CreateUploadUrl,
                file_service_pb2.CreateUploadUrlRequest(
                    header=header(display_name="a", size_bytes=1, labels={"k": "\x00"})
                ),
                md,
            ),
            NUL,
            "header.labels.k",
        ),
        (
            "CreateUploadUrl ttl mixed signs",
            unary(
                stub.CreateUploadUrl,
                file_service_pb2.CreateUploadUrlRequest(
                    header=header(display_name="a", size_bytes=1),
                    ttl=duration_pb2.Duration(seconds=-1, nanos=5),
                ),
                md,
            ),
            DUR,
            "ttl",
        ),
        (
            "Upload header",
            _upload(files, header_msg(display_name="a\x00.bin"), data),
            NUL,
            "header.display_name",
        ),
        (
            "Upload: a later message of the stream",
            _upload(files, header_msg(), data, header_msg(content_type="text/\x00")),
            NUL,
            "header.content_type",
        ),
    ]


async def test_bad_input_is_refused_before_any_handler(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    uploaded, _ = await files.upload(b"hello")
    await check_cases(_cases(files, uploaded.name), caplog)
    listed = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(), metadata=files.md("alice")
    )
    assert [f.name for f in listed.files] == [uploaded.name]
    shares = await files.stub.ListFileShares(
        file_service_pb2.ListFileSharesRequest(name=uploaded.name), metadata=files.md("alice")
    )
    assert list(shares.shares) == []
