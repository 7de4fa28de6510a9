"""Server reflection in both protocol versions: grpc.reflection.v1alpha, through the
stub grpcio-reflection ships, and grpc.reflection.v1, through a client of its own that
knows only the protocol's published messages and field numbers (nothing of the server's
code, which serves v1 with v1alpha's classes)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.servers import RunningServer, ServerFactory, make_settings

V1_INFO = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "payments.v1.PaymentService",
]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]

#: The part of grpc/reflection/v1/reflection.proto this client uses, written from the
#: protocol's specification (the message names and field numbers are the protocol).
CLIENT_PROTO = """
name: "reflection_v1_client.proto"
package: "grpc.reflection.v1"
syntax: "proto3"
message_type {
  name: "ServerReflectionRequest"
  field { name: "host" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "file_containing_symbol" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING
          oneof_index: 0 }
  field { name: "list_services" number: 7 label: LABEL_OPTIONAL type: TYPE_STRING
          oneof_index: 0 }
  oneof_decl { name: "message_request" }
}
message_type {
  name: "ServerReflectionResponse"
  field { name: "file_descriptor_response" number: 4 label: LABEL_OPTIONAL
          type: TYPE_MESSAGE type_name: ".grpc.reflection.v1.FileDescriptorResponse"
          oneof_index: 0 }
  field { name: "list_services_response" number: 6 label: LABEL_OPTIONAL
          type: TYPE_MESSAGE type_name: ".grpc.reflection.v1.ListServiceResponse"
          oneof_index: 0 }
  field { name: "error_response" number: 7 label: LABEL_OPTIONAL
          type: TYPE_MESSAGE type_name: ".grpc.reflection.v1.ErrorResponse" oneof_index: 0 }
  oneof_decl { name: "message_response" }
}
message_type {
  name: "FileDescriptorResponse"
  field { name: "file_descriptor_proto" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "ListServiceResponse"
  field { name: "service" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ServiceResponse" }
}
message_type {
  name: "ServiceResponse"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "ErrorResponse"
  field { name: "error_code" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "error_message" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
}
"""


class V1Client:
    """A grpc.reflection.v1 client with message classes of its own (a private pool)."""

    def __init__(self, port: int) -> None:
        pool = descriptor_pool.DescriptorPool()
        self.client_file = text_format.Parse(CLIENT_PROTO, descriptor_pb2.FileDescriptorProto())
        pool.Add(self.client_file)
        self.request = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
        )
        self.response = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
        )
        self._port = port

    def ask(self, **request: str) -> Any:
        """One request on a ServerReflectionInfo stream; its one answer."""
        with grpc.insecure_channel(f"127.0.0.1:{self._port}") as channel:
            info = channel.stream_stream(
                V1_INFO,
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=self.response.FromString,
            )
            (answer,) = list(info(iter([self.request(**request)]), timeout=5))
            return answer

    def file_containing(self, symbol: str) -> descriptor_pb2.FileDescriptorProto:
        answer = self.ask(file_containing_symbol=symbol)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        return next(f for f in files if symbol.rpartition(".")[0] == f.package)


def _fields(message: descriptor_pb2.DescriptorProto) -> dict[int, tuple[object, ...]]:
    return {f.number: (f.name, f.type, f.label, f.type_name) for f in message.field}


def _v1alpha_services(port: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        return sorted(s.name for s in answer.list_services_response.service)


@pytest.fixture
def v1(server: RunningServer) -> V1Client:
    return V1Client(server.port)


def test_both_versions_list_the_api_health_and_both_reflection_services(
    server: RunningServer, v1: V1Client
) -> None:
    assert _v1alpha_services(server.port) == SERVICES
    answer = v1.ask(list_services="")
    assert sorted(s.name for s in answer.list_services_response.service) == SERVICES


def test_v1_describes_the_api(v1: V1Client) -> None:
    file = v1.file_containing("payments.v1.PaymentService")
    (service,) = file.service
    assert service.name == "PaymentService"
    assert sorted(m.name for m in service.method) == ["GetPayment", "Health", "RequestPayment"]
    assert "RequestPaymentRequest" in {m.name for m in file.message_type}


def test_v1_describes_itself_as_the_protocol_defines_it(v1: V1Client) -> None:
    file = v1.file_containing("grpc.reflection.v1.ServerReflection")
    assert (file.name, file.package) == (
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
    )
    assert not file.options.deprecated  # v1alpha's file is deprecated, v1's is not
    (method,) = file.service[0].method
    assert (method.name, method.client_streaming, method.server_streaming) == (
        "ServerReflectionInfo",
        True,
        True,
    )
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type == ".grpc.reflection.v1.ServerReflectionResponse"
    served = {m.name: m for m in file.message_type}
    for message in v1.client_file.message_type:  # every field the protocol gives, unchanged
        fields = {f.number: (f.name, f.type, f.label, f.type_name) for f in message.field}
        declared = {
            f.number: (f.name, f.type, f.label, f.type_name) for f in served[message.name].field
        }
        assert fields.items() <= declared.items(), message.name


def test_v1_answers_an_unknown_symbol_with_not_found(v1: V1Client) -> None:
    answer = v1.ask(file_containing_symbol="no.such.Service")
    assert answer.WhichOneof("message_response") == "error_response"
    assert answer.error_response.error_code == NOT_FOUND


def test_reflection_can_be_turned_off(server_factory: ServerFactory) -> None:
    app = server_factory(make_settings(reflection_enabled=False))
    with pytest.raises(grpc.RpcError) as v1alpha:
        _v1alpha_services(app.port)
    with pytest.raises(grpc.RpcError) as v1:
        V1Client(app.port).ask(list_services="")
    assert v1alpha.value.code() == v1.value.code() == grpc.StatusCode.UNIMPLEMENTED
