"""X-Request-Id: accepted or minted, returned on every response, carried to the engine and into one access
log line per request (JSON with --log-format json)."""

import logging

import httpx

from server.access_log import ACCESS_LOGGER
from tests.grpc_client import generate_request, stub
from tests.integration.conftest import BUNDLED
from tests.integration.test_disconnect import wait_for

BODY = {"model": BUNDLED, "prompt": "The for statement", "max_tokens": 3}
ACCESS_FIELDS = {"request_id", "protocol", "endpoint", "model", "key", "status", "prompt_tokens",
                 "completion_tokens", "latency_s", "ttft_s"}


def access_lines(caplog, request_id: str) -> list[dict]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER and r.access["request_id"] == request_id]


def test_client_request_id_is_returned_and_logged(server, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    r = httpx.post(server.base_url + "/completions", json=BODY, headers={"X-Request-Id": "client-42"}, timeout=60)
    assert r.headers["x-request-id"] == "client-42" and r.json()["id"] == "client-42"
    wait_for(lambda: access_lines(caplog, "client-42"))
    [line] = access_lines(caplog, "client-42")
    assert set(line) == ACCESS_FIELDS
    assert line["endpoint"] == "/v1/completions" and line["status"] == "200" and line["model"] == BUNDLED
    assert line["key"] == ""  # no keys configured: no key's name
    assert line["completion_tokens"] == r.json()["usage"]["completion_tokens"]
    assert line["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert 0 < line["ttft_s"] <= line["latency_s"]


def test_request_id_is_minted_for_every_response_streams_and_errors_included(server):
    with httpx.stream("POST", server.base_url + "/completions", json={**BODY, "stream": True}, timeout=60) as r:
        r.read()
        assert r.headers["x-request-id"].startswith("cmpl-")
    bad = httpx.post(server.base_url + "/completions", json={**BODY, "n": 0}, timeout=30)
    assert bad.status_code == 400 and bad.headers["x-request-id"].startswith("req-")
    assert httpx.get(server.base_url + "/models", timeout=30).headers["x-request-id"].startswith("req-")
    with httpx.stream("POST", server.base_url + "/chat/completions", headers={"x-request-id": "chat-7"}, json={
            "model": BUNDLED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True},
            timeout=60) as r:
        r.read()
        assert r.headers["x-request-id"] == "chat-7"


def test_request_id_reaches_the_engine(server, monkeypatch):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    # Recorded as the engine takes the request: read while it streams, the engine (a thread of this process)
    # could already have finished it before this thread got the first line (seen: 300 tokens, then none).
    added = []
    add = engine.core.add
    monkeypatch.setattr(engine.core, "add", lambda seqs: (added.extend(seq.request_id for seq in seqs), add(seqs)))
    r = httpx.post(server.base_url + "/completions", json=BODY, headers={"x-request-id": "seen-by-engine"}, timeout=60)
    assert r.status_code == 200
    # The engine keys requests by the client's id plus a unique suffix (clients may reuse ids).
    assert added and all(request_id.startswith("seen-by-engine#") for request_id in added), added
    wait_for(lambda: engine.num_running == 0)


def test_grpc_calls_get_the_same_access_line(server, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    reply = stub(server.grpc_target).Complete(generate_request(BUNDLED, "x", request_id="grpc-9", max_tokens=2),
                                              timeout=60)
    wait_for(lambda: access_lines(caplog, "grpc-9"))
    [line] = access_lines(caplog, "grpc-9")
    assert set(line) == ACCESS_FIELDS
    assert (line["protocol"], line["endpoint"], line["status"]) == ("grpc", "grpc:Complete", "OK")
    assert line["completion_tokens"] == reply.usage.completion_tokens
