"""Versions, soft delete and purge, presigned URLs over real HTTP, and the upload sweep."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from mediagrid.files.v1 import file_pb2, file_service_pb2

from common.grpc_errors import error_info
from services.files.app import build_deps
from services.files.sweep import sweep_once
from tests.files.conftest import PART, Files, random_bytes, sha, start_files
from tests.files.test_resume import upload_until_killed


def http(url: str, method: str = "GET", data: bytes | None = None, **headers: str) -> Any:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    return urllib.request.urlopen(request, timeout=30)


async def test_versions_list_download_restore(files: Files) -> None:
    v1, v2 = b"first version", b"second version!"
    file, _ = await files.upload(v1)
    second, _ = await files.upload(v2, parent=file.name, content_type="text/plain")
    assert second.name == file.name and second.version_id != file.version_id
    assert second.content_type == "text/plain"
    listed = await files.stub.ListFileVersions(
        file_service_pb2.ListFileVersionsRequest(name=file.name), metadata=files.md("alice")
    )
    assert [v.version_id for v in listed.versions] == [second.version_id, file.version_id]
    assert [v.current for v in listed.versions] == [True, False]
    assert await files.download(file.name) == v2
    assert await files.download(file.name, version_id=file.version_id) == v1
    restored = await files.stub.RestoreFileVersion(
        file_service_pb2.RestoreFileVersionRequest(name=file.name, version_id=file.version_id),
        metadata=files.md("alice"),
    )
    assert restored.file.sha256 == sha(v1)
    assert restored.file.version_id not in (file.version_id, second.version_id)
    assert await files.download(file.name) == v1
    page = await files.stub.ListFileVersions(
        file_service_pb2.ListFileVersionsRequest(name=file.name, page_size=2),
        metadata=files.md("alice"),
    )
    rest = await files.stub.ListFileVersions(
        file_service_pb2.ListFileVersionsRequest(name=file.name, page_token=page.next_page_token),
        metadata=files.md("alice"),
    )
    assert len(page.versions) == 2 and len(rest.versions) == 1 and not rest.next_page_token


async def test_list_update_usage(files: Files) -> None:
    for i in range(3):
        await files.upload(b"x" * (i + 1), display_name=f"f{i}.bin", labels={"n": str(i)})
    await files.upload(b"\x1a\x45\xdf\xa3video", content_type="video/webm")
    first = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(page_size=3), metadata=files.md("alice")
    )
    second = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(page_size=3, page_token=first.next_page_token),
        metadata=files.md("alice"),
    )
    assert len(first.files) == 3 and len(second.files) == 1 and not second.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a token stays with its filters
        await files.stub.ListFiles(
            file_service_pb2.ListFilesRequest(
                page_size=3, page_token=first.next_page_token, content_type_prefix="video/"
            ),
            metadata=files.md("alice"),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_PAGE_TOKEN"
    videos = await files.stub.ListFiles(
        file_service_pb2.ListFilesRequest(content_type_prefix="video/"), metadata=files.md("alice")
    )
    assert [f.content_type for f in videos.files] == ["video/webm"]
    target = first.files[0]
    updated = await files.stub.UpdateFile(
        file_service_pb2.UpdateFileRequest(
            file=file_pb2.File(name=target.name, display_name="renamed.bin", labels={"k": "v"}),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
        ),
        metadata=files.md("alice"),
    )
    assert updated.file.display_name == "renamed.bin" and dict(updated.file.labels) == {"k": "v"}
    usage = await files.stub.GetUserUsage(
        file_service_pb2.GetUserUsageRequest(user="users/alice"), metadata=files.md("svc")
    )
    assert (usage.file_count, usage.total_bytes) == (4, 1 + 2 + 3 + 9)


async def test_soft_delete_then_admin_purge(files: Files) -> None:
    file, _ = await files.upload(b"to be deleted")
    await files.upload(b"second", parent=file.name)
    deleted = await files.stub.DeleteFile(
        file_service_pb2.DeleteFileRequest(name=file.name), metadata=files.md("alice")
    )
    assert deleted.file.HasField("delete_time")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.download(file.name)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    bucket = files.ctx.settings.bucket("files")
    async with files.ctx.aws.s3() as s3:
        state = await s3.list_object_versions(Bucket=bucket)
    assert len(state["Versions"]) == 2 and len(state["DeleteMarkers"]) == 1
    usage = await files.stub.GetUserUsage(
        file_service_pb2.GetUserUsageRequest(user="users/alice"), metadata=files.md("alice")
    )
    assert usage.file_count == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.DeleteFile(
            file_service_pb2.DeleteFileRequest(name=file.name, purge=True),
            metadata=files.md("alice"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await files.stub.DeleteFile(
        file_service_pb2.DeleteFileRequest(name=file.name, purge=True), metadata=files.md("admin")
    )
    async with files.ctx.aws.s3() as s3:
        state = await s3.list_object_versions(Bucket=bucket)
    assert "Versions" not in state and "DeleteMarkers" not in state
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.GetFile(
            file_service_pb2.GetFileRequest(name=file.name), metadata=files.md("admin")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_user_files(files: Files) -> None:
    await files.upload(b"a")
    await files.upload(b"b")
    other, _ = await files.upload(b"c", who="bob")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.DeleteUserFiles(
            file_service_pb2.DeleteUserFilesRequest(user="users/alice"), metadata=files.md("alice")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = await files.stub.DeleteUserFiles(
        file_service_pb2.DeleteUserFilesRequest(user="users/alice"), metadata=files.md("svc")
    )
    assert done.deleted_count == 2
    assert await files.download(other.name, who="bob") == b"c"
    # Every object version of alice's is gone; bob's file is all that is left.
    bucket = files.ctx.settings.bucket("files")
    async with files.ctx.aws.s3() as s3:
        state = await s3.list_object_versions(Bucket=bucket)
    left = {v["Key"].split("/")[1] for v in state.get("Versions", [])}
    assert left == {other.owner.removeprefix("users/")}
    assert "DeleteMarkers" not in state


async def test_presigned_get_with_range_over_http(files: Files) -> None:
    data = random_bytes(100_000)
    file, _ = await files.upload(data, display_name="clip one.bin")
    response = await files.stub.CreateDownloadUrl(
        file_service_pb2.CreateDownloadUrlRequest(name=file.name, attachment=True),
        metadata=files.md("alice"),
    )
    assert "X-Amz-Signature=" in response.url and "X-Amz-Expires=900" in response.url
    now = datetime.now(UTC)
    assert (
        now + timedelta(seconds=890)
        < response.expire_time.ToDatetime(UTC)
        <= now + timedelta(seconds=901)
    )
    with await asyncio.to_thread(http, response.url, Range="bytes=1000-1999") as reply:
        assert reply.status == 206
        assert reply.read() == data[1000:2000]
        assert "clip%20one.bin" in reply.headers["Content-Disposition"]


async def test_presign_expiry_bounds(files: Files) -> None:
    file, _ = await files.upload(b"abc")
    for seconds in (-1, 7 * 24 * 3600 + 1):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await files.stub.CreateDownloadUrl(
                file_service_pb2.CreateDownloadUrlRequest(
                    name=file.name, ttl=duration_pb2.Duration(seconds=seconds)
                ),
                metadata=files.md("alice"),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(caught.value)
        assert info is not None and info.reason == "INVALID_TTL"
    week = await files.stub.CreateDownloadUrl(
        file_service_pb2.CreateDownloadUrlRequest(
            name=file.name, ttl=duration_pb2.Duration(seconds=7 * 24 * 3600)
        ),
        metadata=files.md("alice"),
    )
    assert "X-Amz-Expires=604800" in week.url


async def test_presigned_upload_verified_before_commit(files: Files) -> None:
    data = random_bytes(70_000)
    header = file_pb2.UploadHeader(
        display_name="direct.bin",
        content_type="application/x-test",
        size_bytes=len(data),
        sha256=sha(data),
    )
    created = await files.stub.CreateUploadUrl(
        file_service_pb2.CreateUploadUrlRequest(header=header), metadata=files.md("alice")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.CompleteUrlUpload(
            file_service_pb2.CompleteUrlUploadRequest(upload=created.upload),
            metadata=files.md("alice"),
        )
    assert error_info(caught.value).reason == "OBJECT_NOT_UPLOADED"  # type: ignore[union-attr]
    with await asyncio.to_thread(http, created.url, "PUT", data, **dict(created.headers)) as reply:
        assert reply.status == 200
    done = await files.stub.CompleteUrlUpload(
        file_service_pb2.CompleteUrlUploadRequest(upload=created.upload), metadata=files.md("alice")
    )
    assert done.file.sha256 == sha(data) and done.file.size_bytes == len(data)
    assert await files.download(done.file.name) == data


async def test_presigned_upload_with_wrong_bytes_is_refused(files: Files) -> None:
    data = random_bytes(1000)
    header = file_pb2.UploadHeader(display_name="d.bin", size_bytes=len(data), sha256=sha(data))
    created = await files.stub.CreateUploadUrl(
        file_service_pb2.CreateUploadUrlRequest(header=header), metadata=files.md("alice")
    )
    tampered = bytes([data[0] ^ 1]) + data[1:]
    with await asyncio.to_thread(http, created.url, "PUT", tampered, **dict(created.headers)):
        pass
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.CompleteUrlUpload(
            file_service_pb2.CompleteUrlUploadRequest(upload=created.upload),
            metadata=files.md("alice"),
        )
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    bucket = files.ctx.settings.bucket("files")
    async with files.ctx.aws.s3() as s3:
        state = await s3.list_object_versions(Bucket=bucket)
    assert "Versions" not in state


async def test_sweep_leaves_no_multipart_uploads(suite: Any) -> None:
    files = await start_files(suite, upload_orphan_grace_seconds=0)
    data = random_bytes(2 * PART + 10)
    upload = await upload_until_killed(files, data, 2 * PART + 5)
    bucket = files.ctx.settings.bucket("files")
    async with files.ctx.aws.s3() as s3:
        # An orphan: a multipart upload no session knows about (a crash before recording it).
        await s3.create_multipart_upload(Bucket=bucket, Key="users/x/orphan/content")
        assert len((await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]) == 2
    await asyncio.sleep(0.3)  # let in-flight parts of the killed stream land
    deps = await build_deps(files.ctx)
    try:
        report = await sweep_once(deps, now=datetime.now(UTC) + timedelta(days=2))
    finally:
        await deps.storage.close()
    assert report.expired_sessions == 1 and report.aborted_orphans >= 1
    async with files.ctx.aws.s3() as s3:
        assert "Uploads" not in await s3.list_multipart_uploads(Bucket=bucket)
    status = await files.stub.GetUploadStatus(
        file_service_pb2.GetUploadStatusRequest(name=upload), metadata=files.md("alice")
    )
    assert status.upload.state == file_service_pb2.UPLOAD_STATE_EXPIRED


async def test_cancel_upload_aborts_parts(files: Files) -> None:
    upload = await upload_until_killed(files, random_bytes(PART + 10), PART + 5)
    await asyncio.sleep(0.3)
    cancelled = await files.stub.CancelUpload(
        file_service_pb2.CancelUploadRequest(name=upload), metadata=files.md("alice")
    )
    assert cancelled.upload.state == file_service_pb2.UPLOAD_STATE_CANCELLED
    async with files.ctx.aws.s3() as s3:
        assert "Uploads" not in await s3.list_multipart_uploads(
            Bucket=files.ctx.settings.bucket("files")
        )


async def test_presigned_upload_keeps_the_parent_kind(files: Files) -> None:
    """A presigned upload adds a plain-file version, so it refuses a video parent, as
    Upload does (one rule: upload_target)."""
    file, _ = await files.upload(b"\x1a\x45\xdf\xa3video", content_type="video/webm")
    await files.ctx.pool.execute(
        "UPDATE files.files SET kind = 'video' WHERE id = $1", file.name.removeprefix("files/")
    )
    header = file_pb2.UploadHeader(
        display_name="next.webm",
        content_type="video/webm",
        size_bytes=5,
        sha256=sha(b"12345"),
        parent=file.name,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await files.stub.CreateUploadUrl(
            file_service_pb2.CreateUploadUrlRequest(header=header), metadata=files.md("alice")
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "KIND_MISMATCH"  # type: ignore[union-attr]
    sessions = "SELECT count(*) FROM files.upload_sessions WHERE via = 'url'"
    assert await files.ctx.pool.fetchval(sessions) == 0  # nothing was started
