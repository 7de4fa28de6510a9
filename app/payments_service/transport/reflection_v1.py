"""gRPC server reflection under its stable name, ``grpc.reflection.v1``, beside v1alpha.

grpcio-reflection serves only ``grpc.reflection.v1alpha``. Clients try v1 first, and not
all of them fall back. The two protocols are the same on the wire: v1 is v1alpha with the
package renamed, every message, field name and field number unchanged. So v1 is served by
the v1alpha servicer with v1alpha's message classes under v1's service name.

For clients to describe the v1 service itself (``grpcurl describe``), its file descriptor
must be in the descriptor pool reflection answers from: v1alpha's file, renamed, is added
to the default pool when the service is first added to a server (never at import).
"""

from __future__ import annotations

import functools
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

PACKAGE = "grpc.reflection.v1"
SERVICE_NAME = f"{PACKAGE}.ServerReflection"
#: The file's name in gRPC's own repositories, as other servers' reflection reports it.
FILE_NAME = "grpc/reflection/v1/reflection.proto"


def _renamed(type_name: str, old: str) -> str:
    """A fully qualified type name of v1alpha (``.grpc.reflection.v1alpha.X``) in v1."""
    return f".{PACKAGE}{type_name.removeprefix(f'.{old}')}"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of ``grpc/reflection/v1/reflection.proto``: v1alpha's, renamed."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old = file.package
    file.name, file.package = FILE_NAME, PACKAGE
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # a message field; scalars have none
                field.type_name = _renamed(field.type_name, old)
    for service in file.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type, old)
            method.output_type = _renamed(method.output_type, old)
    # v1's own file options (v1alpha's say deprecated and name v1alpha's packages).
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_multiple_files = True
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    return file


@functools.cache
def register_descriptor() -> None:
    """Add v1's file to the default descriptor pool, unless something already did."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def add_to_server(servicer: Any, server: Any) -> None:
    """Serve ``servicer``, a grpc_reflection v1alpha servicer, as ``grpc.reflection.v1``
    (the same shape as the generated ``add_*Servicer_to_server`` functions)."""
    register_descriptor()
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
