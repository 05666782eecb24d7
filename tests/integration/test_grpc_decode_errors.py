"""Requests the gRPC API cannot take as sent are INVALID_ARGUMENT with a message saying why, never UNKNOWN
or INTERNAL: bytes that do not parse as the method's message (sent raw, past any client-side
serializer), an unknown response_format type, a request_id that cannot go back as metadata. The server
serves the next call as usual. A gateway with a one-token backend: none of this reaches a model."""

import logging

import grpc
import pytest

from backends.types import FinishReason, ModelInfo, OutputDelta
from server.access_log import ACCESS_LOGGER
from server.grpc.gen import generate_pb2 as pb
from server.grpc.handlers import SERVICE
from tests.grpc_client import generate_request, stub
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread

STRING = 9  # FieldDescriptor.TYPE_STRING


class OneToken(InertBackend):
    info = ModelInfo(name="one-token", max_model_len=64)

    async def generate(self, request):
        yield OutputDelta(token_ids=[1], text="a", finish_reason=FinishReason.LENGTH)


@pytest.fixture(scope="module")
def gateway():
    srv = ServerThread({"one-token": OneToken()}, grpc=True).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield channel


def call_raw(channel: grpc.Channel, method, data: bytes):
    """Sends `data` as the request of `method` exactly as given; returns the RpcError the call ends with."""
    path = f"/{SERVICE.full_name}/{method.name}"
    with pytest.raises(grpc.RpcError) as err:
        if method.server_streaming:
            list(channel.unary_stream(path)(data, timeout=10))
        else:
            channel.unary_unary(path)(data, timeout=10)
    return err.value


def bad_utf8_in_first_string_field(message_descriptor) -> bytes | None:
    field = next((f for f in message_descriptor.fields if f.type == STRING), None)
    if field is None:
        return None
    tag = (field.number << 3) | 2  # length-delimited; every field number here is below 16, one byte
    return bytes([tag, 2]) + b"\xff\xfe"


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_bytes_that_do_not_parse_are_invalid_argument_on_every_method(channel, method):
    expected = f"the request does not parse as {method.input_type.full_name}: "
    error = call_raw(channel, method, b"\xff\xff\xff\xff not protobuf")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(expected) and "corrupt" in error.details()
    bad_utf8 = bad_utf8_in_first_string_field(method.input_type)
    if bad_utf8 is not None:
        error = call_raw(channel, method, bad_utf8)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(expected) and "UTF-8" in error.details()


def test_an_undecodable_call_is_logged_as_invalid_argument_and_the_next_call_is_served(gateway, channel, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    [complete] = [m for m in SERVICE.methods if m.name == "Complete"]
    call_raw(channel, complete, b"\x0a\x02\xc3\x28")  # model = b"\xc3\x28": not UTF-8
    assert stub(gateway.grpc_target).Complete(generate_request("one-token", "x"), timeout=10).choices[0].text == "a"
    statuses = [r.access["status"] for r in caplog.records
                if r.name == ACCESS_LOGGER and r.access["endpoint"] == "grpc:Complete"]
    assert statuses[-2:] == ["INVALID_ARGUMENT", "OK"]


@pytest.mark.parametrize(("format_type", "shown"), [(pb.ResponseFormat.TYPE_UNSPECIFIED, "TYPE_UNSPECIFIED"),
                                                    (7, "7")])
def test_an_unknown_response_format_type_is_invalid_argument(gateway, format_type, shown):
    request = generate_request("one-token", "x")
    request.sampling.response_format.type = format_type
    with pytest.raises(grpc.RpcError) as err:
        stub(gateway.grpc_target).Complete(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == ("response_format.type: Input should be TYPE_TEXT, TYPE_JSON_OBJECT or "
                                   f"TYPE_JSON_SCHEMA (got {shown})")


def test_a_request_id_that_cannot_be_metadata_is_invalid_argument(gateway):
    generation = stub(gateway.grpc_target)
    with pytest.raises(grpc.RpcError) as err:
        generation.Complete(generate_request("one-token", "x", request_id="two\nlines"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("request_id: must be printable ASCII") and "'two\\nlines'" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(generation.Generate(generate_request("one-token", "x", request_id="é" * 1000), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 200
    printable = 'spaces = and "quotes"'
    _, call = generation.Complete.with_call(generate_request("one-token", "x", request_id=printable), timeout=10)
    assert dict(call.initial_metadata())["x-request-id"] == printable
