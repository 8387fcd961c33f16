"""Server reflection ``grpc.reflection.v1``, served beside ``grpc.reflection.v1alpha``.

grpcio-reflection implements only v1alpha, while current tools (grpcurl, buf curl, grpc-js
reflection clients) ask for v1 first. The v1 protocol is the v1alpha one under a new package:
every message, field name and field number is the same, so the bytes on the wire are the same.
This module therefore

- registers the v1 file (``grpc/reflection/v1/reflection.proto``) in the descriptor pool,
  built from the v1alpha descriptor with the package renamed, so reflection can describe the
  v1 service itself; and
- serves ``grpc.reflection.v1.ServerReflection/ServerReflectionInfo`` with grpcio-reflection's
  own servicer, (de)serializing with the v1alpha message classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
FILE_NAME = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def v1_file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection file: the v1alpha one with its package (and type references) renamed."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = FILE_NAME
    proto.package = _V1_PACKAGE
    proto.ClearField("options")  # v1alpha's language options name v1alpha packages
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return proto


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Add the v1 file to ``pool`` (the default pool) unless it is there already."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor_proto().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1alpha and v1 on ``server`` for ``service_names`` (both reflection
    services are added to the list)."""
    register_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
