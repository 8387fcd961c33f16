"""Property tests of the page-token codec every List RPC uses (common/pagination.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import pagination
from common.errors import InvalidArgument

keys = st.lists(
    st.one_of(st.text(max_size=40), st.integers(min_value=-(2**53), max_value=2**53)),
    min_size=1,
    max_size=3,
)
filters = st.dictionaries(
    st.sampled_from(["role", "status", "user"]), st.text(max_size=10), max_size=3
)


@given(key=keys, query=st.text(max_size=20), flt=filters)
def test_page_tokens_round_trip(key: list[str | int], query: str, flt: dict[str, str]) -> None:
    fp = pagination.fingerprint(query, flt)
    token = pagination.encode(fp, key)
    assert pagination.decode(token, fp, key_length=len(key)) == key
    assert all(c.isalnum() or c in "-_" for c in token)


@given(key=keys, flt1=filters, flt2=filters)
def test_page_tokens_do_not_cross_queries(
    key: list[str | int], flt1: dict[str, str], flt2: dict[str, str]
) -> None:
    fp1, fp2 = pagination.fingerprint("q", flt1), pagination.fingerprint("q", flt2)
    token = pagination.encode(fp1, key)
    if fp1 != fp2:
        with pytest.raises(InvalidArgument) as caught:
            pagination.decode(token, fp2, key_length=len(key))
        assert caught.value.violations[0].field == "page_token"


@given(
    garbage=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=100).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )
)
def test_garbage_page_tokens_are_invalid_argument(garbage: str) -> None:
    fp = pagination.fingerprint("q", {})
    try:
        key = pagination.decode(garbage, fp, key_length=2)
    except InvalidArgument as exc:
        assert exc.violations[0].field == "page_token"
    else:
        assert (garbage == "" and key is None) or (key is not None and len(key) == 2)


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=8,
    )
)
def test_wrongly_shaped_tokens_are_invalid_argument(payload: object) -> None:
    fp = pagination.fingerprint("q", {})
    token = base64.urlsafe_b64encode(json.dumps({"q": fp, "k": payload}).encode()).decode()
    try:
        key = pagination.decode(token, fp, key_length=2)
    except InvalidArgument:
        return
    assert isinstance(key, list) and len(key) == 2


@given(
    stamp=st.datetimes(
        timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
    ),
    key=st.text(max_size=64),
    flt1=filters,
    flt2=filters,
)
def test_time_keys_round_trip_and_stay_with_their_query(
    stamp: datetime, key: str, flt1: dict[str, str], flt2: dict[str, str]
) -> None:
    fp1, fp2 = pagination.fingerprint("List", flt1), pagination.fingerprint("List", flt2)
    token = pagination.encode_time_key(fp1, stamp, key)
    assert pagination.decode_time_key(token, fp1) == (stamp, key)
    assert pagination.decode_time_key("", fp1) is None
    if fp1 != fp2:
        with pytest.raises(InvalidArgument) as caught:
            pagination.decode_time_key(token, fp2)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"


@given(key=keys)
def test_time_keys_reject_other_key_shapes(key: list[str | int]) -> None:
    """A token of the right query whose key is not (ISO time, text) is still invalid."""
    fp = pagination.fingerprint("List", {})
    token = pagination.encode(fp, key)
    try:
        stamp, last = pagination.decode_time_key(token, fp) or (None, None)
    except InvalidArgument as exc:
        assert exc.reason == "INVALID_PAGE_TOKEN"
    else:
        assert isinstance(stamp, datetime) and isinstance(last, str)
        assert stamp.tzinfo is not None


def test_time_key_without_a_time_zone_is_refused() -> None:
    # Keys are compared with timestamptz columns; a naive time would be read in the
    # server's zone, so only a forged token carries one.
    fp = pagination.fingerprint("List", {})
    token = pagination.encode(fp, ["2026-11-26T01:00:00", "u1"])
    with pytest.raises(InvalidArgument) as err:
        pagination.decode_time_key(token, fp)
    assert err.value.reason == "INVALID_PAGE_TOKEN"


@given(
    value=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    default=st.integers(min_value=1, max_value=500),
    maximum=st.integers(min_value=500, max_value=5000),
)
def test_page_size_defaults_caps_and_refuses_negatives(
    value: int, default: int, maximum: int
) -> None:
    if value < 0:
        with pytest.raises(InvalidArgument) as err:
            pagination.page_size(value, default=default, maximum=maximum)
        assert err.value.reason == "INVALID_PAGE_SIZE"
        assert [v.field for v in err.value.violations] == ["page_size"]
        return
    size = pagination.page_size(value, default=default, maximum=maximum)
    assert 1 <= size <= maximum
    assert size == (default if value == 0 else min(value, maximum))
