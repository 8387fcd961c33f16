"""Requests that do not decode become INVALID_ARGUMENT naming the field, not INTERNAL.

grpc's default deserializer raises on a malformed message (for example a ``string`` field
holding invalid UTF-8), which the server turns into an opaque error before any handler or
interceptor runs. ``register_lenient`` re-registers the generated handlers with a
deserializer that returns an ``Undecodable`` marker instead, and wraps each behaviour so the
marker raises ``InvalidArgument`` inside the call (after authentication, through the normal
error mapping). The offending field is found by walking the wire format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from common.errors import FieldViolation, InvalidArgument


class Undecodable:
    """Stands in for a request message that failed to decode."""

    def __init__(self, descriptor: Any, data: bytes) -> None:
        self.descriptor = descriptor
        self.data = data

    def error(self) -> InvalidArgument:
        field = invalid_utf8_field(self.data, self.descriptor)
        if field is not None:
            return InvalidArgument(
                reason="INVALID_UTF8",
                violations=[FieldViolation(field, "is not valid UTF-8")],
            )
        return InvalidArgument(
            "the request message could not be decoded", reason="MALFORMED_REQUEST"
        )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IndexError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def invalid_utf8_field(data: bytes, descriptor: Descriptor, prefix: str = "") -> str | None:
    """The path (``metadata``, ``user.email``) of the first string field that is not UTF-8."""
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
                continue
            if wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:
                return None
            length, pos = _varint(data, pos)
            chunk, pos = data[pos : pos + length], pos + length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = f"{prefix}{field.name}"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
                if field.message_type.GetOptions().map_entry:
                    if invalid_utf8_field(chunk, field.message_type) is not None:
                        return path
                else:
                    inner = invalid_utf8_field(chunk, field.message_type, f"{path}.")
                    if inner is not None:
                        return inner
    except IndexError:
        return None
    return None


def lenient_deserializer(message_type: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Undecodable(message_type.DESCRIPTOR, data)

    return deserialize


def _checked(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            raise request.error()
        return await behavior(request, context)

    return run


class _Capture:
    """Stands in for a server while the generated ``add_*_to_server`` registers handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generic handler duplicates the registered ones; it is rebuilt below."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service = service
        self.handlers = dict(handlers)


def register_lenient(
    add_to_server: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server
) -> None:
    """Register ``servicer`` like ``add_to_server`` would, with lenient request decoding."""
    capture = _Capture()
    add_to_server(servicer, capture)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method, handler in capture.handlers.items():
        if not handler.unary_unary:
            raise TypeError(f"{capture.service}/{method}: only unary RPCs are re-registered")
        message_type = handler.request_deserializer.__self__
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            _checked(handler.unary_unary),
            request_deserializer=lenient_deserializer(message_type),
            response_serializer=handler.response_serializer,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),)
    )
    server.add_registered_method_handlers(capture.service, handlers)
