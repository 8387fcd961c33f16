"""A part's body as sent to S3: rewindable, read as views, the same bytes every time."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.files.storage import _PartBody, _send_part_body_as_views


@given(st.binary(max_size=5000), st.lists(st.integers(min_value=1, max_value=700), max_size=30))
def test_reads_are_views_of_the_part_and_a_rewind_reads_it_again(
    data: bytes, sizes: list[int]
) -> None:
    part = bytearray(data)
    body = _PartBody(part)
    for _attempt in range(2):  # botocore rewinds a body to retry
        assert body.seek(0) == 0
        read = bytearray()
        for size in sizes:
            piece = body.read(size)
            assert isinstance(piece, memoryview) and len(piece) <= size
            read += piece
            assert body.tell() == len(read)
        read += body.read()
        assert read == data
        assert body.read(10) == b""
    with body.getbuffer() as whole:
        assert whole == data
    body.seek(0)
    target = bytearray(len(data) + 3)
    assert body.readinto(target) == len(data)
    assert target[: len(data)] == data


def test_seek_from_the_end_and_the_current_position() -> None:
    body = _PartBody(bytearray(b"0123456789"))
    assert body.seek(-3, io.SEEK_END) == 7
    assert bytes(body.read(2)) == b"78"
    assert body.seek(-4, io.SEEK_CUR) == 5
    assert bytes(body.read()) == b"56789"


def test_aiohttp_writes_it_as_a_stream_of_the_parts_length() -> None:
    from aiobotocore._endpoint_helpers import _IOBaseWrapper
    from aiohttp.payload import PAYLOAD_REGISTRY, BytesIOPayload

    # As aiobotocore hands it over: wrapped so that aiohttp does not close it.
    payload = PAYLOAD_REGISTRY.get(_IOBaseWrapper(_PartBody(bytearray(100))))
    assert isinstance(payload, BytesIOPayload) and payload.size == 100


def test_only_the_body_of_the_request_being_sent_is_swapped() -> None:
    class Request:
        def __init__(self, body: Any) -> None:
            self.body = body

    part = bytearray(b"abc")
    sent = Request(part)
    _send_part_body_as_views(request=sent)
    assert isinstance(sent.body, _PartBody) and bytes(sent.body.read()) == b"abc"
    assert part == b"abc"  # what botocore re-creates a retried request from is untouched
    empty = Request(b"")
    _send_part_body_as_views(request=empty)
    assert empty.body == b""
