"""gRPC registration for the FileService with zero-copy paths for data messages.

Generated code parses every ``UploadRequest`` into a message and ``request.data`` then copies
its bytes again: two copies of every uploaded byte before the engine sees it. A data message
on the wire is exactly one field-2 entry (tag ``0x12``, a varint length, the bytes), so the
deserializer below hands the engine a ``memoryview`` of the received buffer instead; any
other shape (the header, unknown fields, several fields) takes the normal protobuf path.

Downloads go the other way: building ``DownloadResponse(data=...)`` and serializing it copies
each chunk twice on the event loop. :func:`encode_download_data` builds the same bytes
(``data`` is field 2 too) in the S3 reader thread, and the response serializer passes such
:class:`EncodedResponse` objects through as they are. On the receiving side,
:func:`parse_download_response` does for Python callers what :func:`parse_upload_request`
does for the server: a data message becomes a memoryview of the received bytes instead of a
parsed message whose ``data`` is copied again on every access (:func:`download_method`).
"""

from __future__ import annotations

from typing import Any

import grpc
from mediagrid.files.v1 import file_service_pb2

from common.wire_format import encode_varint, read_varint

_DATA_TAG = 0x12  # field 2 (data), wire type 2 (length-delimited)


class EncodedResponse:
    """A response message already serialized (``wire``), carrying ``size`` payload bytes."""

    __slots__ = ("size", "wire")

    def __init__(self, wire: bytes, size: int) -> None:
        self.wire = wire
        self.size = size


def encode_download_data(data: bytes) -> EncodedResponse:
    """``DownloadResponse(data=data)`` serialized, without a protobuf message in between."""
    if not data:  # proto3 leaves an empty field out
        return EncodedResponse(b"", 0)
    return EncodedResponse(
        b"".join((bytes([_DATA_TAG]), encode_varint(len(data)), data)), len(data)
    )


def serialize_download_response(
    response: file_service_pb2.DownloadResponse | EncodedResponse,
) -> bytes:
    """``DownloadResponse`` serializer that passes pre-encoded messages through."""
    if isinstance(response, EncodedResponse):
        return response.wire
    return response.SerializeToString()


def _data_only(raw: bytes) -> memoryview | None:
    """The payload of a message that is exactly one field-2 bytes entry, else None."""
    if raw[:1] == bytes([_DATA_TAG]):
        try:
            length, start = read_varint(raw, 1)
        except IndexError:
            return None  # cut short: the real parser reports it
        # protobuf reads a length as at most five varint bytes (a 32-bit size): anything
        # longer goes to its parser, which refuses it.
        if start <= 6 and length < 2**31 and start + length == len(raw):
            return memoryview(raw)[start:]
    return None


def parse_upload_request(raw: bytes) -> file_service_pb2.UploadRequest | memoryview:
    """``UploadRequest`` deserializer: data messages become a memoryview of their bytes."""
    data = _data_only(raw)
    if data is not None:
        return data
    return file_service_pb2.UploadRequest.FromString(raw)


def parse_download_response(raw: bytes) -> file_service_pb2.DownloadResponse | memoryview:
    """``DownloadResponse`` deserializer: data messages become a memoryview of their bytes
    (``data`` is field 2 of ``DownloadResponse`` as of ``UploadRequest``); the file header,
    and any other shape, is parsed by protobuf."""
    data = _data_only(raw)
    if data is not None:
        return data
    return file_service_pb2.DownloadResponse.FromString(raw)


DOWNLOAD_METHOD = "/mediagrid.files.v1.FileService/Download"


def download_method(channel: grpc.aio.Channel) -> Any:
    """``FileService.Download`` on ``channel`` with :func:`parse_download_response`: the
    generated stub's call, except that data messages arrive as memoryviews."""
    return channel.unary_stream(
        DOWNLOAD_METHOD,
        request_serializer=file_service_pb2.DownloadRequest.SerializeToString,
        response_deserializer=parse_download_response,
    )


def generic_handler(servicer: Any) -> grpc.GenericRpcHandler:
    """The same handlers as the generated ``add_FileServiceServicer_to_server``, with
    :func:`parse_upload_request` for ``Upload``."""
    descriptor = file_service_pb2.DESCRIPTOR.services_by_name["FileService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        request = getattr(file_service_pb2, method.input_type.name)
        response = getattr(file_service_pb2, method.output_type.name)
        deserializer = parse_upload_request if method.name == "Upload" else request.FromString
        serializer = response.SerializeToString
        if method.name == "Download":
            serializer = serialize_download_response
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            make = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            make = grpc.unary_stream_rpc_method_handler
        else:
            make = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            behaviour,
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)
