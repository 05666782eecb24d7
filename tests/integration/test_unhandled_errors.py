"""An error no handler expected (here a tokenizer that raises) is logged once: one ERROR record on one line
with the request id, the error and where it was raised, and nothing from uvicorn, Starlette or grpc on top;
the client still gets its protocol's internal error. Over HTTP (OpenAI and TGI shapes) and gRPC, from a
real server whose every log record is collected."""

import contextlib
import logging
import socket
import time

import grpc
import httpx
import pytest

from backends.tokenizing import Tokenizing
from backends.types import ModelInfo
from server.access_log import ACCESS_LOGGER, text_value
from server.grpc.gen import generate_pb2 as pb
from tests.grpc_client import stub
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread
from tests.unit.test_access_log import parse_text_fields


class RaisingTokenizer:
    def encode(self, *args, **kwargs):
        raise RuntimeError("tokenizer bug")

    __call__ = encode

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0}


class BrokenTokenizerBackend(InertBackend):
    info = ModelInfo(name="broken", max_model_len=64)
    tokenizer = RaisingTokenizer()
    tokenizing = Tokenizing(tokenizer, max_model_len=64)

    async def generate(self, request):
        raise AssertionError("only the tokenizer is used here")
        yield


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record not in self.records:  # a record that reaches both loggers below is one record
            self.records.append(record)


@contextlib.contextmanager
def every_log_record():
    """Records of every logger, uvicorn's included: other tests' uvicorn configs stop them propagating."""
    handler = Collect()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def errors_logged_by(call) -> tuple[object, list[logging.LogRecord]]:
    """What `call(server)` returned, and the ERROR records (or worse) the server logged meanwhile."""
    with every_log_record() as records:
        server = ServerThread({"broken": BrokenTokenizerBackend()}, grpc=True).start()
        try:
            result = call(server)
        finally:
            server.stop()  # every record the request causes is written by now
    return result, [r for r in records if r.levelno >= logging.ERROR]


def assert_logged_once(errors: list[logging.LogRecord], request_id: str) -> None:
    assert len(errors) == 1, [r.getMessage() for r in errors]
    [error] = errors
    message = error.getMessage()
    assert error.exc_info is None and "\n" not in message
    quoted_id = text_value(request_id)  # as the access log writes it: a client's id cannot forge fields
    assert message.startswith(f'unhandled error: request_id={quoted_id} error="RuntimeError: tokenizer bug" at="')
    assert "test_unhandled_errors.py:" in message and " encode" in message  # where it was raised


def test_openai_route_500_is_logged_once_with_the_clients_request_id():
    response, errors = errors_logged_by(lambda server: httpx.post(
        server.url + "/tokenize", json={"model": "broken", "prompt": "x"}, headers={"x-request-id": "tok-1"},
        timeout=10))
    assert response.status_code == 500 and response.headers["x-request-id"] == "tok-1"
    assert response.json() == {"error": {"message": "internal error: RuntimeError", "type": "internal_error",
                                         "param": None, "code": None}}
    assert_logged_once(errors, "tok-1")


def test_a_hostile_request_id_is_quoted_in_the_error_line():
    hostile = 'x error="forged" at=nowhere'
    response, errors = errors_logged_by(lambda server: httpx.post(
        server.url + "/tokenize", json={"model": "broken", "prompt": "x"}, headers={"x-request-id": hostile},
        timeout=10))
    assert response.status_code == 500
    assert_logged_once(errors, hostile)
    fields = parse_text_fields(errors[0].getMessage().removeprefix("unhandled error: "))
    assert list(fields) == ["request_id", "error", "at"] and fields["request_id"] == hostile


def test_a_minted_request_id_is_the_one_logged_and_returned():
    response, errors = errors_logged_by(lambda server: httpx.post(
        server.url + "/tokenize", json={"model": "broken", "prompt": "x"}, timeout=10))
    assert response.status_code == 500 and response.headers["x-request-id"].startswith("req-")
    assert_logged_once(errors, response.headers["x-request-id"])


def test_tgi_route_failure_is_logged_once():
    response, errors = errors_logged_by(lambda server: httpx.post(
        server.url + "/tokenize", json={"inputs": "x"}, headers={"x-request-id": "tgi-1"}, timeout=10))
    assert response.status_code == 424
    assert response.json() == {"error": "Request failed during generation: internal error: RuntimeError",
                               "error_type": "generation"}
    assert_logged_once(errors, "tgi-1")


def test_grpc_internal_error_is_logged_once():
    def tokenize(server):
        with pytest.raises(grpc.RpcError) as err:
            stub(server.grpc_target).Tokenize(pb.TokenizeRequest(model="broken", text="x"),
                                              metadata=(("x-request-id", "grpc-1"),), timeout=10)
        return err.value

    error, errors = errors_logged_by(tokenize)
    assert error.code() == grpc.StatusCode.INTERNAL and error.details() == "internal error: RuntimeError"
    assert_logged_once(errors, "grpc-1")


def test_a_client_that_leaves_while_sending_its_body_is_not_an_error(caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    def leave_mid_body(server):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaver\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\": ")
            time.sleep(0.2)  # the handler is reading the body

    _, errors = errors_logged_by(leave_mid_body)
    assert errors == []
    [access] = [r.access for r in caplog.records if r.name == ACCESS_LOGGER and r.access["request_id"] == "leaver"]
    assert access["status"] == "499"
