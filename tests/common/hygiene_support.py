"""Helpers of the per-service hygiene tests: send a request, expect the layer's refusal.

Each case is (label, a coroutine function making the call, expected reason, expected field
path). :func:`check_cases` runs them all against one running service and reports every case
that did not come out as INVALID_ARGUMENT with that reason and path, or that logged an
error (the layer refuses before any handler runs, so nothing may reach the error log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from common.grpc_errors import bad_request, error_info
from common.wire_format import encode_varint

Call = Callable[[], Awaitable[Any]]
Case = tuple[str, Call, str, str]


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def nested_struct(levels: int, key: bytes = b"a") -> bytes:
    """A Struct ``{key: {key: ... {}}}`` of ``levels`` Structs, serialized by hand: protobuf
    itself refuses to build or parse the deep ones."""
    struct = b""
    for _ in range(levels - 1):
        struct = field(1, field(1, key) + field(2, field(5, struct)))
    return struct


def raw_call(channel: grpc.aio.Channel, method: str, body: bytes, metadata: Any) -> Call:
    """A unary call of ``method`` with hand-made request bytes."""

    async def call() -> Any:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return await stub(body, metadata=metadata)

    return call


def unary(method: Callable[..., Awaitable[Any]], request: Message, metadata: Any) -> Call:
    async def call() -> Any:
        return await method(request, metadata=metadata)

    return call


def server_streaming(method: Callable[..., Any], request: Message, metadata: Any) -> Call:
    async def call() -> Any:
        return [response async for response in method(request, metadata=metadata)]

    return call


def expected_path(levels: int, prefix: str, key: str = "a", limit: int = 32) -> str:
    """The path the layer names for a Struct nested ``levels`` > ``limit`` deep."""
    assert levels > limit
    return prefix + f".{key}" * limit


async def check_cases(cases: Sequence[Case], caplog: pytest.LogCaptureFixture) -> None:
    failures: list[str] = []
    for label, call, reason, path in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            try:
                await call()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                info = error_info(error)
                bad = bad_request(error)
                got = (
                    code.name,
                    info.reason if info else None,
                    [v.field for v in bad.field_violations] if bad else None,
                )
            else:
                got = ("OK", None, None)
        if got != ("INVALID_ARGUMENT", reason, [path]):
            failures.append(f"{label}: got {got}, expected ({reason!r}, {path!r})")
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        if logged:
            failures.append(f"{label}: logged {[r.getMessage() for r in logged]}")
    assert not failures, "\n".join(failures)
