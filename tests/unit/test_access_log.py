import json
import logging
import re

import grpc
import httpx
import pytest

from backends.types import FinishReason, ModelInfo, OutputDelta
from server.access_log import ACCESS_LOGGER, JsonFormatter, TextFormatter
from server.grpc.gen import generate_pb2 as pb
from tests.grpc_client import generate_request, stub
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread


def access_record(fields: dict) -> logging.LogRecord:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "access", None, None)
    record.access = fields
    return record


def test_json_access_line_is_one_object_with_the_fields():
    line = JsonFormatter().format(access_record({"request_id": "r1", "status": "200", "latency_s": 0.5}))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "r1" and parsed["status"] == "200" and parsed["latency_s"] == 0.5
    assert parsed["logger"] == ACCESS_LOGGER and parsed["level"] == "info" and parsed["ts"].endswith("Z")


def test_other_records_keep_their_message_in_json():
    record = logging.LogRecord("server.app", logging.WARNING, __file__, 1, "ready in %.1f s", (1.25,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "ready in 1.2 s"


def test_text_access_line_is_key_value_pairs():
    line = TextFormatter().format(access_record({"request_id": "r1", "status": "200", "latency_s": 0.5}))
    assert line.endswith("turnout.access: request_id=r1 status=200 latency_s=0.5")


# Request ids come from clients (X-Request-Id, gRPC metadata, the gRPC request_id field).
HOSTILE_IDS = [
    "a status=999 model=evil",
    'quote" status="999',
    "back\\slash\\",
    "line\n2026-01-01 00:00:00,000 INFO turnout.access: request_id=fake status=200",
    "cr\rlf\r\n",
    "tab\tvt\x0bff\x0cfs\x1c",
    "nul\x00esc\x1b[31m",
    "unicode\u2028line\u2029separators\x85nel",
    "non-ascii é ☃",
    "",
    "=",
    "key=",
    '"',
]
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')


def parse_text_fields(message: str) -> dict:
    """Reads a text access line's fields back; fails if any part of it is not a field."""
    fields, pos = {}, 0
    while pos < len(message):
        match = FIELD.match(message, pos)
        assert match, f"not a field at {message[pos:]!r}"
        key, raw = match.groups()
        assert key not in fields, f"{key} twice"
        fields[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = match.end()
    return fields


def access_fields(request_id: str) -> dict:
    return {"request_id": request_id, "protocol": "http", "endpoint": "/v1/completions", "model": "m",
            "status": "200", "latency_s": 0.5, "ttft_s": None}


@pytest.mark.parametrize("request_id", HOSTILE_IDS)
def test_a_text_access_line_parses_back_to_exactly_its_fields(request_id):
    fields = access_fields(request_id)
    line = TextFormatter().format(access_record(fields))
    assert len(line.splitlines()) == 1 and line.isascii() and line.isprintable()
    _, message = line.split(" turnout.access: ", 1)
    assert parse_text_fields(message) == {key: str(value) for key, value in fields.items()}


@pytest.mark.parametrize("request_id", HOSTILE_IDS)
def test_a_json_access_line_is_one_line_with_exactly_its_fields(request_id):
    fields = access_fields(request_id)
    line = JsonFormatter().format(access_record(fields))
    assert len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert {key: parsed[key] for key in fields} == fields


def test_plain_values_stay_unquoted():
    line = TextFormatter().format(access_record({"request_id": "cmpl-1f2e", "endpoint": "grpc:Generate",
                                                 "model": "org/model-7b.v1@rev+2", "ttft_s": None}))
    assert line.endswith(": request_id=cmpl-1f2e endpoint=grpc:Generate model=org/model-7b.v1@rev+2 ttft_s=None")



class OneToken(InertBackend):
    info = ModelInfo(name="one-token", max_model_len=64)

    async def generate(self, request):
        yield OutputDelta(token_ids=[1], text="a", finish_reason=FinishReason.LENGTH)


def test_ids_sent_by_clients_cannot_forge_access_fields(caplog):
    """Over HTTP and gRPC (metadata and request field): each request's text line reads back with the
    client's exact id and the server's own status."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    wanted = {"h status=999 model=evil": "200", "m status=999 model=evil": "OK",
              'f" status=999 model=evil': "OK", "f\nstatus=999 model=evil": "INVALID_ARGUMENT"}
    server = ServerThread({"one-token": OneToken()}, grpc=True).start()
    try:
        httpx.get(server.url + "/v1/models", headers={"x-request-id": "h status=999 model=evil"}, timeout=10)
        generation = stub(server.grpc_target)
        generation.ListModels(pb.ListModelsRequest(), metadata=(("x-request-id", "m status=999 model=evil"),),
                              timeout=10)
        generation.Complete(generate_request("one-token", "x", request_id='f" status=999 model=evil'), timeout=10)
        with pytest.raises(grpc.RpcError):
            generation.Complete(generate_request("one-token", "x", request_id="f\nstatus=999 model=evil"),
                                timeout=10)
    finally:
        server.stop()
    logged = {r.access["request_id"]: r for r in caplog.records
              if r.name == ACCESS_LOGGER and r.access["request_id"] in wanted}
    assert set(logged) == set(wanted)
    for request_id, record in logged.items():
        line = TextFormatter().format(record)
        assert len(line.splitlines()) == 1
        fields = parse_text_fields(line.split(" turnout.access: ", 1)[1])
        assert fields["request_id"] == request_id and fields["status"] == wanted[request_id]
        assert fields["model"] in ("", "one-token")
