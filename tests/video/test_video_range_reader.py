"""The cached ranged reader behaves exactly like an in-memory file, locally and over S3."""

from __future__ import annotations

import io
import os

import boto3
import pytest
from botocore.config import Config
from hypothesis import given
from hypothesis import strategies as st

from services.files.video.processing import probe
from services.files.video.range_reader import RangeReader, RangeReadError, open_s3_object
from services.files.video.storage import thumbnail_key, thumbnail_prefix
from tests.support.hypo import relaxed
from tests.video.clips import make_clip


def reader_over(
    data: bytes, block_size: int, cache_blocks: int
) -> tuple[RangeReader, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        assert 0 <= start <= end < len(data), (start, end)
        calls.append((start, end))
        return data[start : end + 1]

    return RangeReader(len(data), fetch, block_size=block_size, cache_blocks=cache_blocks), calls


operation = st.one_of(
    st.tuples(st.just("read"), st.integers(min_value=-1, max_value=300)),
    st.tuples(st.just("seek"), st.integers(min_value=0, max_value=400), st.just(os.SEEK_SET)),
    st.tuples(st.just("seek"), st.integers(min_value=-100, max_value=100), st.just(os.SEEK_CUR)),
    st.tuples(st.just("seek"), st.integers(min_value=-300, max_value=50), st.just(os.SEEK_END)),
)


@relaxed(max_examples=300)
@given(
    data=st.binary(min_size=0, max_size=300),
    block_size=st.integers(min_value=1, max_value=64),
    cache_blocks=st.integers(min_value=1, max_value=8),
    ops=st.lists(operation, max_size=25),
)
def test_random_seeks_and_reads_equal_slicing(
    data: bytes, block_size: int, cache_blocks: int, ops: list[tuple[object, ...]]
) -> None:
    reader, _ = reader_over(data, block_size, cache_blocks)
    expected = io.BytesIO(data)
    for op in ops:
        if op[0] == "read":
            size = int(op[1])  # type: ignore[call-overload]
            assert reader.read(size) == expected.read(size)
        else:
            offset, whence = int(op[1]), int(op[2])  # type: ignore[call-overload]
            target = {os.SEEK_SET: 0, os.SEEK_CUR: expected.tell(), os.SEEK_END: len(data)}[whence]
            if target + offset < 0:
                with pytest.raises(ValueError):
                    reader.seek(offset, whence)
                continue
            assert reader.seek(offset, whence) == expected.seek(offset, whence)
        assert reader.tell() == expected.tell()


def test_cached_blocks_are_not_fetched_again() -> None:
    data = bytes(range(256)) * 16  # 4096 bytes
    reader, calls = reader_over(data, block_size=1024, cache_blocks=4)
    assert reader.read(3000) == data[:3000]
    assert calls == [(0, 3071)]  # three missing adjacent blocks, one ranged read
    reader.seek(100)
    assert reader.read(2000) == data[100:2100]
    reader.seek(-10, os.SEEK_END)
    assert reader.read() == data[-10:]
    assert calls == [(0, 3071), (3072, 4095)]


def test_a_short_ranged_read_is_an_error() -> None:
    reader = RangeReader(100, lambda start, end: b"x", block_size=10, cache_blocks=2)
    with pytest.raises(RangeReadError):
        reader.read(5)


def test_thumbnail_keys_replace_the_content_suffix() -> None:
    assert thumbnail_key("users/u1/jobs/j9/f1/content", 2) == "users/u1/jobs/j9/f1/thumbnails/2.jpg"
    assert thumbnail_prefix("users/u1/f1/content") == "users/u1/f1/thumbnails/"
    with pytest.raises(ValueError):
        thumbnail_prefix("users/u1/f1/other")


def test_probe_over_s3_ranged_reads(s3_endpoint: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4"),
    )
    client.create_bucket(Bucket="range-reader-test")
    clip = make_clip(seconds=2.0)
    client.put_object(Bucket="range-reader-test", Key="clip.mp4", Body=clip)
    reader = open_s3_object(
        client, bucket="range-reader-test", key="clip.mp4", block_size=4096, cache_blocks=64
    )
    assert reader.size == len(clip)
    meta = probe(reader)
    assert meta.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert 1 <= reader.fetches <= len(clip) // 4096 + 1


def test_storage_errors_propagate_unchanged_through_pyav() -> None:
    """A failing ranged read must not look like a corrupt video (it is retried, not failed)."""
    clip = make_clip(seconds=1.0)

    def fetch(start: int, end: int) -> bytes:
        raise ConnectionError("S3 went away")

    reader = RangeReader(len(clip), fetch, block_size=1024, cache_blocks=4)
    with pytest.raises(ConnectionError, match="S3 went away"):
        probe(reader)
