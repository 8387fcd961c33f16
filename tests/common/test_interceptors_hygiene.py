"""The suite interceptor runs the hygiene layer on every parsed request message: unary,
each message of a stream (iterated or read with ``context.read()``), and names a Struct too
deep for protobuf's parser from the raw bytes. The handler never sees a refused message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from common.grpc_errors import bad_request, error_info
from common.wire_format import invalid_utf8_field
from tests.common.hygiene_support import field, nested_struct
from tests.support.rpc import demo_service, method, serving

seen: list[Any] = []


async def echo(request: Any, context: Any) -> Any:
    seen.append(request)
    return wrappers_pb2.StringValue(value="ok")


async def count_iterated(requests: AsyncIterator[Any], context: Any) -> Any:
    async for request in requests:
        seen.append(request)
    return wrappers_pb2.StringValue(value="ok")


async def count_read(context: Any) -> Any:
    while (request := await context.read()) is not grpc.aio.EOF:
        seen.append(request)
    return wrappers_pb2.StringValue(value="ok")


def _service() -> Any:
    string_in = wrappers_pb2.StringValue.FromString
    out = wrappers_pb2.StringValue.SerializeToString
    return demo_service(
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=string_in, response_serializer=out
            ),
            "Struct": grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=struct_pb2.Struct.FromString,
                response_serializer=out,
            ),
            "Iterated": grpc.stream_unary_rpc_method_handler(
                count_iterated, request_deserializer=string_in, response_serializer=out
            ),
            "Read": grpc.stream_unary_rpc_method_handler(
                lambda _requests, context: count_read(context),
                request_deserializer=string_in,
                response_serializer=out,
            ),
        }
    )


def _expect(error: grpc.aio.AioRpcError, reason: str, path: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = error_info(error), bad_request(error)
    assert info is not None and info.reason == reason
    assert bad is not None and [v.field for v in bad.field_violations] == [path]


async def test_unary_and_every_stream_message_are_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen.clear()
    async with serving(_service()) as (_, channel):
        call = channel.unary_unary(
            method("Echo"), request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(wrappers_pb2.StringValue(value="a\x00").SerializeToString())
        _expect(caught.value, "NUL_IN_STRING", "value")
        assert seen == []
        for name in ("Iterated", "Read"):
            stream = channel.stream_unary(
                method(name), request_serializer=None, response_deserializer=None
            )
            messages = [wrappers_pb2.StringValue(value=v).SerializeToString() for v in "ab"]
            messages.append(wrappers_pb2.StringValue(value="\x00").SerializeToString())
            with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream(iter(messages))
            _expect(caught.value, "NUL_IN_STRING", "value")
            assert [m.value for m in seen] == ["a", "b"], name  # the bad one never arrived
            seen.clear()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("levels", [33, 200, 10_000])
async def test_a_struct_too_deep_to_parse_is_named(levels: int) -> None:
    seen.clear()
    async with serving(_service()) as (_, channel):
        call = channel.unary_unary(
            method("Struct"), request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(nested_struct(levels))
    _expect(caught.value, "STRUCT_TOO_DEEP", ".".join(["a"] * 32))
    assert seen == []


def test_the_utf8_walk_is_bounded_on_hostile_nesting() -> None:
    # 10,000 nested Structs with invalid UTF-8 at the bottom: no RecursionError.
    bottom = field(1, field(1, b"k") + field(2, field(3, b"\xff")))
    struct = bottom
    for _ in range(10_000):
        struct = field(1, field(1, b"a") + field(2, field(5, struct)))
    assert invalid_utf8_field(struct, struct_pb2.Struct.DESCRIPTOR) is None
    assert invalid_utf8_field(bottom, struct_pb2.Struct.DESCRIPTOR) == "fields"
