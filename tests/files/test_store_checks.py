"""What only a real S3 checks (the integration lane: SeaweedFS, or AWS): presigned URLs that
were tampered with or have expired are refused, a URL signed for the public endpoint works
there, and a record whose object is gone is DATA_LOSS with no URL minted for it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from google.protobuf import duration_pb2
from mediagrid.files.v1 import files_pb2

from common.check import check_stored_objects
from common.grpc_errors import error_info
from tests.files.conftest import Files, random_bytes, start_files
from tests.support.object_store import ObjectStore


def http_status(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def download_url(files: Files, name: str, seconds: int = 0) -> str:
    response = await files.stub.CreateDownloadUrl(
        files_pb2.CreateDownloadUrlRequest(name=name, ttl=duration_pb2.Duration(seconds=seconds)),
        metadata=files.md("alice"),
    )
    return str(response.url)


async def test_tampered_and_expired_urls_are_refused(files: Files) -> None:
    data = random_bytes(4096)
    file, _ = await files.upload(data)
    url = await download_url(files, file.name, seconds=1)
    status, body = await asyncio.to_thread(http_status, url, Range="bytes=0-99")
    assert (status, body) == (206, data[:100])

    # Another object of the same bucket under the same signature.
    other, _ = await files.upload(b"someone else's")
    tampered = url.replace(file.storage.key, other.storage.key)
    assert tampered != url
    assert (await asyncio.to_thread(http_status, tampered))[0] == 403
    # One byte of the signature changed.
    head, _, signature = url.rpartition("X-Amz-Signature=")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert (await asyncio.to_thread(http_status, head + "X-Amz-Signature=" + flipped))[0] == 403

    await asyncio.sleep(2.5)  # past the URL's one second
    assert (await asyncio.to_thread(http_status, url))[0] == 403


async def test_missing_object_is_data_loss_and_no_url_is_minted(
    files: Files, object_store: ObjectStore
) -> None:
    file, _ = await files.upload(random_bytes(10_000))
    s3 = object_store.client()
    # The store lost the object (every version), the record stays: a wiped or restored store.
    await asyncio.to_thread(
        s3.delete_object,
        Bucket=file.storage.bucket,
        Key=file.storage.key,
        VersionId=file.storage.version_id,
    )
    for call in (files.download(file.name), download_url(files, file.name)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        info = error_info(caught.value)
        assert info is not None and info.reason == "OBJECT_MISSING"
        assert info.metadata["resource"] == file.name

    result = await check_stored_objects(files.ctx.settings)
    assert not result.ok
    assert file.name in result.detail and "1 of the newest 1 of 1 files" in result.detail


async def test_urls_are_signed_for_the_public_endpoint(
    suite: Any, object_store: ObjectStore
) -> None:
    if object_store.endpoint is None:
        pytest.skip("real AWS has one public endpoint: nothing to map")
    inner = urlsplit(object_store.endpoint)
    # Another name for the same server, as a compose service name is for the host.
    public = urlunsplit(inner._replace(netloc=f"localhost:{inner.port}"))
    files = await start_files(suite, s3_public_endpoint_url=public)
    data = random_bytes(3000)
    file, _ = await files.upload(data)

    url = await download_url(files, file.name)
    assert url.startswith(f"{public}/")
    assert await asyncio.to_thread(http_status, url) == (200, data)
    # The signature covers the host: the same URL sent to the services' endpoint is refused,
    # which shows it was signed for the public one, not merely rewritten.
    internal = url.replace(public, object_store.endpoint, 1)
    assert (await asyncio.to_thread(http_status, internal))[0] == 403
