"""Opaque page tokens bound to the query that produced them (every List RPC of the suite).

A token is URL-safe base64 of a small JSON object: ``q`` is a fingerprint of the query
(the RPC and its filters; never the page size) and ``k`` the sort key of the last row
returned. A token used with a different query, or one that does not decode, is an
INVALID_ARGUMENT on ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from common.errors import InvalidArgument

MAX_TOKEN_LENGTH = 1024
Key = list[str | int]
TimeKey = tuple[datetime, str]
T = TypeVar("T")
C = TypeVar("C")


def invalid_token(field: str = "page_token") -> InvalidArgument:
    return InvalidArgument.field(
        field, "is not a page token of this query", reason="INVALID_PAGE_TOKEN"
    )


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    """A request's page size: ``default`` for 0, at most ``maximum``; negative is invalid."""
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative", reason="INVALID_PAGE_SIZE")
    return min(value or default, maximum)


def fingerprint(query: str, filters: Mapping[str, object]) -> str:
    """A short, stable digest of a query and its filters."""
    text = json.dumps(
        [query, sorted((k, str(v)) for k, v in filters.items())], separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(query_fingerprint: str, key: Sequence[str | int]) -> str:
    payload = json.dumps({"q": query_fingerprint, "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(
    token: str, query_fingerprint: str, *, key_length: int, field: str = "page_token"
) -> Key | None:
    """The key stored in ``token``; None for an empty token (the first page)."""
    if not token:
        return None
    invalid = invalid_token(field)
    if len(token) > MAX_TOKEN_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(payload, dict) or payload.get("q") != query_fingerprint:
        raise invalid
    key = payload.get("k")
    if (
        not isinstance(key, list)
        or len(key) != key_length
        or not all(isinstance(part, str | int) and not isinstance(part, bool) for part in key)
    ):
        raise invalid
    return key


def encode_time_key(query_fingerprint: str, stamp: datetime, key: str) -> str:
    """A token for keyset pagination over ``(time, id)``, the order most listings use."""
    return encode(query_fingerprint, [stamp.isoformat(), key])


def decode_time_key(
    token: str, query_fingerprint: str, *, field: str = "page_token"
) -> tuple[datetime, str] | None:
    """``(time, id)`` from a token of :func:`encode_time_key`; None for the first page."""
    key = decode(token, query_fingerprint, key_length=2, field=field)
    if key is None:
        return None
    stamp, last = key
    try:
        if not isinstance(stamp, str) or not isinstance(last, str):
            raise ValueError("not a time key")
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:  # ours always carry an offset; a naive one is forged
            raise ValueError("no time zone")
        return moment, last
    except ValueError:
        raise invalid_token(field) from None


def encode_id_key(query_fingerprint: str, key: int) -> str:
    """A token for keyset pagination over one integer id."""
    return encode(query_fingerprint, [key])


def decode_id_key(token: str, query_fingerprint: str, *, field: str = "page_token") -> int | None:
    """The id from a token of :func:`encode_id_key`; None for the first page."""
    key = decode(token, query_fingerprint, key_length=1, field=field)
    if key is None:
        return None
    if not isinstance(key[0], int):
        raise invalid_token(field)
    return key[0]


class Cursor(Protocol[C]):
    """How one listing's sort key travels in a page token."""

    def encode(self, query_fingerprint: str, key: C, /) -> str: ...

    def decode(self, token: str, query_fingerprint: str, /) -> C | None: ...


class _TimeCursor:
    def encode(self, query_fingerprint: str, key: TimeKey, /) -> str:
        return encode_time_key(query_fingerprint, *key)

    def decode(self, token: str, query_fingerprint: str, /) -> TimeKey | None:
        return decode_time_key(token, query_fingerprint)


class _IdCursor:
    def encode(self, query_fingerprint: str, key: int, /) -> str:
        return encode_id_key(query_fingerprint, key)

    def decode(self, token: str, query_fingerprint: str, /) -> int | None:
        return decode_id_key(token, query_fingerprint)


BY_TIME: Cursor[TimeKey] = _TimeCursor()
BY_ID: Cursor[int] = _IdCursor()


async def page(
    query: str,
    filters: Mapping[str, object],
    page_token: str,
    size: int,
    fetch: Callable[[C | None, int], Awaitable[Sequence[T]]],
    key: Callable[[T], C],
    cursor: Cursor[C],
) -> tuple[list[T], str]:
    """One page of a List RPC and the token of the next one ("" on the last page).

    ``fetch(after, limit)`` returns up to ``limit`` rows after the cursor (None: from the
    start); one row more than ``size`` is asked for, so a last page is known without a count.
    """
    bound = fingerprint(query, filters)
    rows = list(await fetch(cursor.decode(page_token, bound), size + 1))
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, cursor.encode(bound, key(rows[-1]))
