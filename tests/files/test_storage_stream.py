"""Storage.stream: the threaded reader (sync client in its own thread) against moto."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mediagrid.files.v1 import file_pb2, file_service_pb2

from common.aws import AwsClients
from common.errors import NotFound
from services.files.storage import Storage
from services.files.wire import encode_download_data, serialize_download_response
from tests.support.hypo import relaxed

KiB = 1024


class CountingClient:
    """A sync S3 client proxy that counts the body bytes the reader thread pulled."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.read_bytes = 0

    def get_object(self, **kwargs: Any) -> Any:
        response = self.inner.get_object(**kwargs)
        body, outer = response["Body"], self

        class Body:
            def read(self, amount: int) -> bytes:
                data: bytes = body.read(amount)
                outer.read_bytes += len(data)
                return data

            def close(self) -> None:
                body.close()

        return {**response, "Body": Body()}

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
async def storage(settings: Any) -> AsyncIterator[Storage]:
    opened = await Storage.open(AwsClients(settings), "stream-test", create=True)
    assert opened.sync_client is not None  # the threaded path is the one under test
    yield opened
    await opened.close()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "s3-read"]


async def test_threaded_stream_yields_exact_chunks_and_ranges(storage: Storage) -> None:
    data = os.urandom(300 * KiB + 7)
    put = await storage.put_object("k/obj", data, "application/octet-stream", {})
    chunks = [c async for c in storage.stream("k/obj", put.version_id, chunk_size=64 * KiB)]
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks[:-1]] == [64 * KiB] * (len(chunks) - 1)
    part = [
        c
        async for c in storage.stream(
            "k/obj", put.version_id, offset=1000, length=100 * KiB, chunk_size=64 * KiB
        )
    ]
    assert b"".join(part) == data[1000 : 1000 + 100 * KiB]
    digest, size = await storage.sha256_of("k/obj", put.version_id)
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))


async def test_threaded_stream_maps_a_missing_object_to_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound) as missing:
        async for _ in storage.stream("k/none", None):
            pass
    assert missing.value.reason == "OBJECT_NOT_FOUND"


async def test_threaded_stream_reads_ahead_boundedly_and_stops_when_abandoned(
    storage: Storage,
) -> None:
    chunk, ahead = 16 * KiB, 2
    data = os.urandom(40 * chunk)
    put = await storage.put_object("k/big", data, "application/octet-stream", {})
    counting = CountingClient(storage.sync_client)
    storage.sync_client = counting
    before = set(_reader_threads())
    stream = cast(
        AsyncGenerator[bytes, None],
        storage.stream("k/big", put.version_id, chunk_size=chunk, read_ahead=ahead),
    )
    first = await anext(stream)
    readers = set(_reader_threads()) - before
    assert len(readers) == 1
    assert first == data[:chunk]
    await asyncio.sleep(0.3)  # give the reader every chance to run further ahead
    # Taken one; at most ``ahead`` queued and one being read: never the whole object.
    assert counting.read_bytes <= (1 + ahead + 1) * chunk
    await stream.aclose()
    (reader,) = readers
    await asyncio.to_thread(reader.join, 30)
    assert not reader.is_alive()
    assert counting.read_bytes < len(data)


@given(st.binary(min_size=0, max_size=300) | st.integers(1, 3 * 2**21).map(lambda n: b"x" * n))
@hypothesis_settings(max_examples=40, deadline=None)
def test_pre_encoded_download_data_is_the_protobuf_encoding(data: bytes) -> None:
    encoded = encode_download_data(data)
    assert encoded.size == len(data)
    assert encoded.wire == file_service_pb2.DownloadResponse(data=data).SerializeToString()
    assert serialize_download_response(encoded) == encoded.wire
    header = file_service_pb2.DownloadResponse(file=file_pb2.File(name="files/x"))
    assert serialize_download_response(header) == header.SerializeToString()


def _parallel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("s3-read-")]


async def test_parallel_ranged_reads_yield_any_range_in_order(storage: Storage) -> None:
    data = os.urandom(700 * KiB + 13)
    put = await storage.put_object("k/par", data, "application/octet-stream", {})
    loop = asyncio.get_running_loop()

    @relaxed(max_examples=25)
    @given(
        offset=st.integers(0, len(data) - 1),
        length=st.integers(1, len(data)),
        segment=st.sampled_from([64 * KiB, 100 * KiB + 1, 256 * KiB]),
        chunk=st.sampled_from([16 * KiB, 64 * KiB, 1000 * KiB]),
        streams=st.integers(2, 5),
    )
    def check(offset: int, length: int, segment: int, chunk: int, streams: int) -> None:
        length = min(length, len(data) - offset)

        async def read() -> list[bytes]:
            stream = storage.stream_encoded(
                "k/par",
                put.version_id,
                bytes,
                offset=offset,
                length=length,
                chunk_size=chunk,
                streams=streams,
                segment_size=segment,
            )
            return [c async for c in stream]

        got = asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=60)
        assert b"".join(got) == data[offset : offset + length]
        assert all(0 < len(c) <= chunk for c in got)

    await asyncio.to_thread(check)


async def test_parallel_reads_hold_at_most_their_streams_segments_and_stop_when_abandoned(
    storage: Storage,
) -> None:
    segment, streams = 64 * KiB, 2
    data = os.urandom(30 * segment)
    put = await storage.put_object("k/par-big", data, "application/octet-stream", {})
    counting = CountingClient(storage.sync_client)
    storage.sync_client = counting
    before = set(_parallel_threads())
    stream = cast(
        AsyncGenerator[bytes, None],
        storage.stream_encoded(
            "k/par-big",
            put.version_id,
            bytes,
            length=len(data),
            chunk_size=16 * KiB,
            streams=streams,
            segment_size=segment,
        ),
    )
    first = await anext(stream)
    readers = set(_parallel_threads()) - before
    assert first == data[: 16 * KiB]
    assert len(readers) == streams
    await asyncio.sleep(0.3)  # give the readers every chance to run further ahead
    # The segment being consumed and the others of the window: never the whole object.
    assert counting.read_bytes <= streams * segment
    await stream.aclose()
    for reader in readers:
        await asyncio.to_thread(reader.join, 30)
        assert not reader.is_alive()
    assert counting.read_bytes < len(data)


async def test_parallel_reads_map_a_missing_version_to_not_found(storage: Storage) -> None:
    data = os.urandom(300 * KiB)
    put = await storage.put_object("k/gone", data, "application/octet-stream", {})
    await storage.delete_version("k/gone", put.version_id)
    with pytest.raises(NotFound) as missing:
        async for _ in storage.stream_encoded(
            "k/gone",
            put.version_id,
            bytes,
            length=len(data),
            streams=3,
            segment_size=64 * KiB,
        ):
            pass
    assert missing.value.reason == "OBJECT_NOT_FOUND"
