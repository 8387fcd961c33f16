"""Property tests of the datetime <-> Timestamp conversion every service uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.timestamps import from_timestamp, set_timestamp, timestamp

moments = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5))]),
)


@given(moments)
def test_timestamp_matches_protobuf_and_round_trips(value: datetime) -> None:
    reference = timestamp_pb2.Timestamp()
    reference.FromDatetime(value)
    assert timestamp(value) == reference
    in_place = timestamp_pb2.Timestamp()
    set_timestamp(in_place, value)
    assert in_place == reference
    assert 0 <= reference.nanos < 1_000_000_000
    back = from_timestamp(reference, True)
    assert back == value and back is not None and back.tzinfo == UTC


def test_none_means_unset() -> None:
    assert timestamp(None) is None
    message = timestamp_pb2.Timestamp(seconds=5)
    set_timestamp(message, None)
    assert message.seconds == 5
    assert from_timestamp(message, False) is None


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(-62_135_596_801, 0), (253_402_300_800, 0), (0, 1_000_000_000), (0, -1)]
)
def test_a_timestamp_outside_the_valid_range_is_invalid_argument(seconds: int, nanos: int) -> None:
    message = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(InvalidArgument) as info:
        from_timestamp(message, True)
    assert info.value.reason == "TIMESTAMP_OUT_OF_RANGE"
