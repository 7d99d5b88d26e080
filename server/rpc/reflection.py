"""Server reflection, v1 beside v1alpha.

grpcio-reflection ships only `grpc.reflection.v1alpha`; tools that speak only
`grpc.reflection.v1` (newer grpcurl, Postman, grpc-java's) would get
UNIMPLEMENTED. The v1 messages are wire-identical to v1alpha's, so the one
v1alpha servicer answers both method paths. A copy of the v1alpha descriptor
renamed to v1 goes into the descriptor pool so that v1 can describe itself.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1 = "grpc.reflection.v1.ServerReflection"


def enable(service_names: list[str], server: grpc.Server) -> None:
    """Serve reflection v1alpha and v1 on `server`, listing `service_names`
    and both reflection services."""
    _register_v1_descriptor()
    names = list(dict.fromkeys([*service_names, V1ALPHA, V1]))
    servicer = reflection.ReflectionServicer(names)
    v1_handler = grpc.method_handlers_generic_handler(V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    })
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((v1_handler,))


def _register_v1_descriptor() -> None:
    """Add grpc/reflection/v1/reflection.proto (v1alpha's, renamed) to the default pool, once."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."

    def rename(messages):
        for message in messages:
            for f in message.field:
                if f.type_name.startswith(old):
                    f.type_name = new + f.type_name[len(old):]
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    try:
        pool.Add(proto)
    except (TypeError, ValueError):  # another copy got there first, or the pool refuses: v1 still answers
        pass
