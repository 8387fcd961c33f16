"""Server reflection v1 beside v1alpha, asked as a v1-only client asks (its own message types
built from the v1 descriptor, the v1 method path)."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from common import reflection_v1
from tests.support.rpc import demo_service, serving, unary

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def echo(request: bytes, context: Any) -> bytes:
    return request


def v1_classes() -> tuple[Any, Any]:
    """Request and response classes of v1, from a pool of their own (not the server's)."""
    pool = descriptor_pool.DescriptorPool()
    reflection_v1.register_v1_descriptor(pool)
    request = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    response = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


def test_v1_descriptor_renames_every_reference() -> None:
    proto = reflection_v1.v1_file_descriptor_proto()
    assert proto.package == "grpc.reflection.v1"
    assert "v1alpha" not in proto.SerializeToString().decode("latin-1")
    assert [m.name for m in proto.service[0].method] == ["ServerReflectionInfo"]


async def test_v1_client_lists_and_describes() -> None:
    request_type, response_type = v1_classes()
    async with serving(demo_service({"Echo": unary(echo)})) as (_, channel):
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(
            iter(
                [
                    request_type(list_services=""),
                    request_type(file_containing_symbol=reflection_v1.SERVICE_NAME),
                    request_type(file_containing_symbol="grpc.no.Such"),
                ]
            ),
            timeout=10,
        )
        replies = [reply async for reply in call]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "mediagrid.demo.v1.DemoService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= names
    described = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    assert [d.package for d in described] == ["grpc.reflection.v1"]
    assert replies[1].original_request.file_containing_symbol == reflection_v1.SERVICE_NAME
    assert replies[2].error_response.error_code == 5  # NOT_FOUND
