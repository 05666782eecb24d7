"""Request bodies held to their limits (server/http/body_guard.py), over raw sockets: a POST must say it is
JSON (415), be at most max_body_bytes (413, before the body is read when its Content-Length says so) and
arrive within body_timeout (408), each answered in the route's API's shape; what a refused request still
sends is dropped and the connection closed, without losing the answer. The official clients, which send
JSON, are served as before. A gateway with a one-token backend: nothing here needs a model."""

import json
import socket

import httpx
import openai
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backends.types import FinishReason, ModelInfo, OutputDelta
from server.http.limits import HttpLimits
from tests.inert_backend import InertBackend
from tests.raw_http import closed_by_server, connect, head, post, read_response
from tests.server_thread import ServerThread

MAX_BODY = 1000
LIMITS = HttpLimits(max_body_bytes=MAX_BODY, body_timeout=1.0, keep_alive_timeout=1.0)
CLOSE_WITHIN = 5.0  # well past the 1 s timeouts above


class OneToken(InertBackend):
    info = ModelInfo(name="one-token", max_model_len=64)

    async def generate(self, request):
        yield OutputDelta(token_ids=[1], text="a", finish_reason=FinishReason.LENGTH)


@pytest.fixture(scope="module", params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def gateway(request):
    srv = ServerThread({"one-token": OneToken()}, limits=LIMITS, parser=request.param).start()
    yield srv
    srv.stop()


def completion(prompt: str = "x") -> bytes:
    return json.dumps({"model": "one-token", "prompt": prompt, "max_tokens": 1}).encode()


def exactly(size: int) -> bytes:
    body = completion("")
    return completion("x" * (size - len(body)))


def openai_error(message_part: str) -> dict:
    return {"message": message_part, "type": "invalid_request_error", "param": None, "code": None}


def test_a_content_length_over_the_limit_is_a_413_before_any_of_the_body_is_sent(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/v1/completions", {"Content-Type": "application/json",
                                                       "Content-Length": str(10 * 2**30)}))
        response = read_response(sock)
        assert response.status == 413
        assert response.json() == {"error": openai_error(
            f"request body is {10 * 2**30} bytes, more than the limit of {MAX_BODY} bytes")}
        assert closed_by_server(sock, CLOSE_WITHIN)


def test_a_chunked_body_is_refused_once_it_passes_the_limit(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/generate", {"Content-Type": "application/json",
                                                "Transfer-Encoding": "chunked"}))
        for _ in range(3):  # 1200 bytes in all, and the body never ends
            sock.sendall(b"190\r\n" + b" " * 400 + b"\r\n")
        response = read_response(sock)
        assert response.status == 413
        assert response.json() == {"error": f"request body is more than the limit of {MAX_BODY} bytes",
                                   "error_type": "payload_too_large"}
        assert closed_by_server(sock, CLOSE_WITHIN)


def test_a_body_of_exactly_the_limit_is_served(gateway):
    body = exactly(MAX_BODY)
    assert len(body) == MAX_BODY
    with connect(gateway.port) as sock:
        sock.sendall(post("/v1/completions", body))
        assert read_response(sock).status == 200
        sock.sendall(post("/v1/completions", exactly(MAX_BODY + 1)))
        assert read_response(sock).status == 413


def test_a_client_still_sending_its_refused_body_gets_the_answer_not_a_reset(gateway):
    """The server drops the rest of the body instead of closing on it: closing with bytes still arriving
    resets the connection, and a client like this one, which writes its whole request before it reads,
    would see the reset and never the 413."""
    with connect(gateway.port) as sock:
        sock.sendall(post("/v1/completions", b" " * 4_000_000))  # the 413 was sent after the head
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock)
        assert response.status == 413
        assert closed_by_server(sock, CLOSE_WITHIN)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx", None])
def test_a_post_that_is_not_json_is_a_415_and_never_reaches_the_route(gateway, content_type):
    """What a web page may send cross-origin without a preflight (and what is no JSON at all)."""
    with connect(gateway.port) as sock:
        sock.sendall(post("/v1/chat/completions", b"{}", content_type))
        response = read_response(sock)
    got = f"got {content_type!r}" if content_type else "the request has none"
    assert response.status == 415
    assert response.json() == {"error": openai_error(f"Content-Type must be application/json; {got}")}


@pytest.mark.parametrize("path", ["/", "/generate", "/generate_stream"])
def test_the_415_is_in_tgi_shape_on_tgi_routes(gateway, path):
    r = httpx.post(gateway.url + path, content=b'{"inputs": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert r.json() == {"error": "Content-Type must be application/json; got 'text/plain'",
                        "error_type": "unsupported_media_type"}


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          "application/json ;charset=UTF-8"])
def test_json_with_parameters_or_in_any_case_is_json(gateway, content_type):
    r = httpx.post(gateway.url + "/v1/completions", content=completion(), headers={"content-type": content_type})
    assert r.status_code == 200, r.text


def test_a_body_slower_than_the_timeout_is_a_408_and_the_connection_closes(gateway):
    """A Content-Length larger than the body sent: the connection is not held open."""
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/v1/completions", {"Content-Type": "application/json", "Content-Length": "100"})
                     + b'{"model": ')
        response = read_response(sock)
        assert response.status == 408
        assert response.json() == {"error": openai_error("request body not received within 1 s")}
        assert closed_by_server(sock, CLOSE_WITHIN)


def test_the_408_is_in_tgi_shape_on_tgi_routes(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/generate", {"Content-Type": "application/json", "Content-Length": "100"}))
        response = read_response(sock)
    assert response.status == 408
    assert response.json() == {"error": "request body not received within 1 s", "error_type": "request_timeout"}


def test_a_body_nobody_reads_does_not_hold_the_connection(gateway):
    """A POST to an unknown path is answered (404) before its body; the rest never comes. The server
    closes the connection instead of waiting for it."""
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/nothing", {"Content-Type": "application/json", "Content-Length": "100"}))
        assert read_response(sock).status == 404
        assert closed_by_server(sock, CLOSE_WITHIN)


@pytest.mark.parametrize(("path", "content_type"), [("/nothing", "application/json"),
                                                    ("/v1/completions", "text/plain")])
def test_an_answer_sent_before_the_body_says_the_connection_closes(gateway, path, content_type):
    """A client that reused the connection after it would lose its next request to the close (the fuzz
    test's httpx client did, now and then); told, it opens a new one."""
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", path, {"Content-Type": content_type, "Content-Length": "100"}))
        response = read_response(sock)
        assert response.status in (404, 415)
        assert response.headers.get("connection") == "close"
        sock.sendall(b"x" * 100)  # the body, late: dropped, and the close is clean
        assert closed_by_server(sock, CLOSE_WITHIN)


def test_an_answer_after_the_whole_body_keeps_the_connection(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(post("/v1/completions", b"{}", "text/plain"))  # refused, but the body is all in
        response = read_response(sock)
        assert response.status == 415 and "connection" not in response.headers
        sock.sendall(post("/v1/completions", completion()))
        assert read_response(sock).status == 200


def test_a_complete_request_keeps_its_connection(gateway):
    with connect(gateway.port) as sock:
        for _ in range(3):
            sock.sendall(post("/v1/completions", completion()))
            assert read_response(sock).status == 200


def test_the_official_clients_are_served(gateway):
    from huggingface_hub import InferenceClient

    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=30)
    assert client.completions.create(model="one-token", prompt="x", max_tokens=1).choices[0].text == "a"
    chat = client.chat.completions.create(model="one-token", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert chat.choices[0].message.content == "a"
    assert InferenceClient(model=gateway.url).text_generation("x", max_new_tokens=1) == "a"

