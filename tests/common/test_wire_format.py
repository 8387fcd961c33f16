"""Property tests of the hand-written protobuf varint codec (common/wire_format.py)."""

from __future__ import annotations

import pytest
from google.protobuf import wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from common.wire_format import encode_varint, read_varint


@given(value=st.integers(min_value=0, max_value=2**64 - 1), prefix=st.binary(max_size=8))
def test_varints_round_trip_and_match_protobuf(value: int, prefix: bytes) -> None:
    encoded = encode_varint(value)
    assert read_varint(prefix + encoded + b"\x00", len(prefix)) == (
        value,
        len(prefix) + len(encoded),
    )
    # Field 1 of UInt64Value is a varint: protobuf's own encoding after the tag byte 0x08.
    if value:
        assert wrappers_pb2.UInt64Value(value=value).SerializeToString() == b"\x08" + encoded


@given(value=st.integers(min_value=128, max_value=2**64 - 1))
def test_a_cut_varint_is_an_index_error(value: int) -> None:
    encoded = encode_varint(value)
    with pytest.raises(IndexError):
        read_varint(encoded[:-1], 0)
