"""Authorization matrix over every FileService RPC with exact status codes.

owner (alice), shared reader (bob), shared writer (carol), other user (dave), admin,
anonymous. PERMISSION_DENIED comes before NOT_FOUND: a file id nobody shared with the
caller gets PERMISSION_DENIED whether or not it exists.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from mediagrid.files.v1 import file_pb2, file_service_pb2

from services.files.keys import new_id
from tests.files.conftest import Files, data_msgs, header_msg, sha, upload_outcome

OK = grpc.StatusCode.OK
PD = grpc.StatusCode.PERMISSION_DENIED
NF = grpc.StatusCode.NOT_FOUND
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
WHO = ["alice", "bob", "carol", "dave", "admin", None]

Call = Callable[[Files, Any, str], Awaitable[Any]]


def md(files: Files, who: str | None) -> Any:
    return files.md(who) if who else ()


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


async def shared_file(files: Files) -> file_pb2.File:
    file, _ = await files.upload(b"shared bytes")
    for user, role in (
        ("bob", file_service_pb2.SHARE_ROLE_READER),
        ("carol", file_service_pb2.SHARE_ROLE_WRITER),
    ):
        await files.stub.ShareFile(
            file_service_pb2.ShareFileRequest(name=file.name, user=f"users/{user}", role=role),
            metadata=files.md("alice"),
        )
    return file


async def download(files: Files, who: str | None, name: str) -> None:
    async for _ in files.stub.Download(
        file_service_pb2.DownloadRequest(name=name), metadata=md(files, who)
    ):
        pass


async def upload_version(files: Files, who: str | None, name: str) -> None:
    if who is None:
        code = await code_of(_anonymous_upload(files.stub.Upload()))
    else:
        code, _, _ = await upload_outcome(files, [header_msg(parent=name), *data_msgs(b"v2")], who)
    if code != OK:
        raise _Code(code)


class _Code(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code


async def _anonymous_upload(call: Any) -> None:
    await call.write(header_msg())
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass


def file_rpcs(files: Files, file: file_pb2.File, who: str | None) -> dict[str, Awaitable[Any]]:
    """Non-destructive RPCs on ``file``."""
    m = md(files, who)
    s = files.stub
    name = file.name
    return {
        "GetFile": s.GetFile(file_service_pb2.GetFileRequest(name=name), metadata=m),
        "Download": download(files, who, name),
        "CreateDownloadUrl": s.CreateDownloadUrl(
            file_service_pb2.CreateDownloadUrlRequest(name=name), metadata=m
        ),
        "ListFileVersions": s.ListFileVersions(
            file_service_pb2.ListFileVersionsRequest(name=name), metadata=m
        ),
        "UpdateFile": s.UpdateFile(
            file_service_pb2.UpdateFileRequest(
                file=file_pb2.File(name=name, labels={"by": who or "x"}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            metadata=m,
        ),
        "RestoreFileVersion": s.RestoreFileVersion(
            file_service_pb2.RestoreFileVersionRequest(name=name, version_id=file.version_id),
            metadata=m,
        ),
        "Upload(parent)": upload_version(files, who, name),
        "CreateUploadUrl(parent)": s.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(
                header=file_pb2.UploadHeader(
                    display_name="v.bin", parent=name, size_bytes=1, sha256=sha(b"x")
                )
            ),
            metadata=m,
        ),
        "ListFileShares": s.ListFileShares(
            file_service_pb2.ListFileSharesRequest(name=name), metadata=m
        ),
        "ShareFile": s.ShareFile(
            file_service_pb2.ShareFileRequest(
                name=name, user="users/erin", role=file_service_pb2.SHARE_ROLE_READER
            ),
            metadata=m,
        ),
    }


READ = {"alice": OK, "bob": OK, "carol": OK, "dave": PD, "admin": OK, None: UNAUTH}
WRITE = {"alice": OK, "bob": PD, "carol": OK, "dave": PD, "admin": OK, None: UNAUTH}
MANAGE = {"alice": OK, "bob": PD, "carol": PD, "dave": PD, "admin": OK, None: UNAUTH}
SELF = {"alice": OK, "bob": PD, "carol": PD, "dave": PD, "admin": OK, None: UNAUTH}
PRIVILEGED = {"alice": PD, "bob": PD, "carol": PD, "dave": PD, "admin": OK, None: UNAUTH}

EXPECTED = {
    "GetFile": READ,
    "Download": READ,
    "CreateDownloadUrl": READ,
    "ListFileVersions": READ,
    "UpdateFile": WRITE,
    "RestoreFileVersion": WRITE,
    "Upload(parent)": WRITE,
    "CreateUploadUrl(parent)": WRITE,
    "ListFileShares": MANAGE,
    "ShareFile": MANAGE,
}


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        return await code_of(call)
    except _Code as exc:
        return exc.code


async def test_file_rpcs_matrix(files: Files) -> None:
    file = await shared_file(files)
    mismatches = []
    for who in WHO:
        for rpc, call in file_rpcs(files, file, who).items():
            got = await outcome(call)
            if got != EXPECTED[rpc][who]:
                mismatches.append(f"{rpc} as {who}: {got.name}, expected {EXPECTED[rpc][who].name}")
    assert mismatches == []


async def test_permission_denied_before_not_found(files: Files) -> None:
    file = await shared_file(files)
    missing = file_pb2.File(name=f"files/{new_id()}", version_id="v")
    mismatches = []
    for who in ["bob", "carol", "dave", "admin"]:
        for rpc, call in file_rpcs(files, missing, who).items():
            got = await outcome(call)
            expected = NF if who == "admin" else PD
            if got != expected:
                mismatches.append(f"{rpc} as {who}: {got.name}, expected {expected.name}")
    assert mismatches == []
    # The other user cannot tell an existing file from a missing one.
    for name in (file.name, missing.name):
        assert (
            await code_of(
                files.stub.GetFile(
                    file_service_pb2.GetFileRequest(name=name), metadata=files.md("dave")
                )
            )
            == PD
        )


async def test_destructive_rpcs_matrix(files: Files) -> None:
    mismatches = []

    def check(rpc: str, who: str | None, got: grpc.StatusCode, expected: grpc.StatusCode) -> None:
        if got != expected:
            mismatches.append(f"{rpc} as {who}: {got.name}, expected {expected.name}")

    for who in WHO:
        m = md(files, who)
        file = await shared_file(files)
        got = await code_of(
            files.stub.UnshareFile(
                file_service_pb2.UnshareFileRequest(name=file.name, user="users/bob"), metadata=m
            )
        )
        check("UnshareFile", who, got, MANAGE[who])
        got = await code_of(
            files.stub.DeleteFile(file_service_pb2.DeleteFileRequest(name=file.name), metadata=m)
        )
        check("DeleteFile", who, got, MANAGE[who])
        file = await shared_file(files)
        got = await code_of(
            files.stub.DeleteFile(
                file_service_pb2.DeleteFileRequest(name=file.name, purge=True), metadata=m
            )
        )
        check("DeleteFile(purge)", who, got, PRIVILEGED[who])
        got = await code_of(
            files.stub.ListFiles(
                file_service_pb2.ListFilesRequest(parent="users/alice"), metadata=m
            )
        )
        check("ListFiles", who, got, SELF[who])
        got = await code_of(
            files.stub.GetUserUsage(
                file_service_pb2.GetUserUsageRequest(user="users/alice"), metadata=m
            )
        )
        check("GetUserUsage", who, got, SELF[who])
        # Upload sessions: only the uploader (and admins) see, cancel or complete them.
        data = b"session bytes"
        created = await files.stub.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(
                header=file_pb2.UploadHeader(
                    display_name="s.bin", size_bytes=len(data), sha256=sha(data)
                )
            ),
            metadata=files.md("alice"),
        )
        request = urllib.request.Request(
            created.url, data=data, method="PUT", headers=dict(created.headers)
        )
        await asyncio.to_thread(lambda r=request: urllib.request.urlopen(r, timeout=30).read())
        got = await code_of(
            files.stub.GetUploadStatus(
                file_service_pb2.GetUploadStatusRequest(name=created.upload), metadata=m
            )
        )
        check("GetUploadStatus", who, got, SELF[who])
        got = await code_of(
            files.stub.CompleteUrlUpload(
                file_service_pb2.CompleteUrlUploadRequest(upload=created.upload), metadata=m
            )
        )
        check("CompleteUrlUpload", who, got, SELF[who])
        second = await files.stub.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(
                header=file_pb2.UploadHeader(display_name="s.bin", size_bytes=1, sha256=sha(b"x"))
            ),
            metadata=files.md("alice"),
        )
        got = await code_of(
            files.stub.CancelUpload(
                file_service_pb2.CancelUploadRequest(name=second.upload), metadata=m
            )
        )
        check("CancelUpload", who, got, SELF[who])
        got = await code_of(
            files.stub.DeleteUserFiles(
                file_service_pb2.DeleteUserFilesRequest(user="users/alice"), metadata=m
            )
        )
        check("DeleteUserFiles", who, got, PRIVILEGED[who])
    # New uploads and presigned uploads need only a signed-in caller.
    for who in WHO:
        got = await code_of(
            files.stub.CreateUploadUrl(
                file_service_pb2.CreateUploadUrlRequest(
                    header=file_pb2.UploadHeader(
                        display_name="n.bin", size_bytes=1, sha256=sha(b"x")
                    )
                ),
                metadata=md(files, who),
            )
        )
        check("CreateUploadUrl", who, got, UNAUTH if who is None else OK)
    anonymous = await code_of(_anonymous_upload(files.stub.Upload()))
    check("Upload", None, anonymous, UNAUTH)
    assert mismatches == []
