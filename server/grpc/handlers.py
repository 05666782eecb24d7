"""The Generation service's method handlers, registered here instead of by the generated
`add_GenerationServicer_to_server`, for one difference: request bytes that do not parse as the method's
message (corrupt wire format, a string field that is not UTF-8) reach the servicer as `Undecodable`, and it
answers INVALID_ARGUMENT. With the generated deserializers grpc catches the DecodeError itself, logs a
traceback and answers UNKNOWN, which reads as a server fault."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from server.grpc.gen import generate_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Generation"]


@dataclass(frozen=True)
class Undecodable:
    """What arrived instead of a request message."""

    message_type: str
    """The message the bytes should have been, e.g. "turnout.v1.GenerateRequest"."""
    error: str
    """Why protobuf rejected them."""

    @property
    def message(self) -> str:
        return f"the request does not parse as {self.message_type}: {self.error}"


def lenient_deserializer(message_class: type[Message]):
    """`message_class.FromString`, returning `Undecodable` where that raises."""
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            # upb names the type in its message; it is said once, by Undecodable.message
            return Undecodable(name, str(exc).removeprefix(f"Error parsing message with type '{name}': "))

    return deserialize


def add_generation_service(servicer, server: grpc.aio.Server) -> None:
    """Every rpc of turnout.v1.Generation, served by `servicer`'s method of the same name."""
    handlers = {}
    for method in SERVICE.methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: client streaming rpcs are not registered here")
        make_handler = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                        else grpc.unary_unary_rpc_method_handler)
        handlers[method.name] = make_handler(
            getattr(servicer, method.name),
            request_deserializer=lenient_deserializer(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
