"""Request heads held to their limits by our uvicorn protocol (server/http/connection_limits.py), over raw
sockets and over both parsers it may be built on: too many bytes or header lines are a 431, a head slower
than header_timeout a 408, each in OpenAI's JSON shape (no route is known yet) with the connection closed;
a connection that sends nothing, or nothing more after a response, is closed."""

import time

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backends.types import ModelInfo
from server.http.limits import HttpLimits
from tests.inert_backend import InertBackend
from tests.raw_http import closed_by_server, connect, head, read_response
from tests.server_thread import ServerThread

MAX_HEAD = 2048
MAX_COUNT = 20
LIMITS = HttpLimits(max_header_bytes=MAX_HEAD, max_header_count=MAX_COUNT, header_timeout=1.0,
                    keep_alive_timeout=1.0)
CLOSE_WITHIN = 5.0  # well past the 1 s timeouts above


class Idle(InertBackend):
    info = ModelInfo(name="idle", max_model_len=64)

    async def generate(self, request):
        raise AssertionError("a refused head never reaches a backend")
        yield


@pytest.fixture(scope="module", params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def gateway(request):
    srv = ServerThread({"idle": Idle()}, limits=LIMITS, parser=request.param).start()
    yield srv
    srv.stop()


def refused(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def assert_refused_and_closed(sock, status: int, message: str) -> None:
    response = read_response(sock)
    assert response.status == status
    assert response.headers["content-type"] == "application/json" and response.headers["connection"] == "close"
    assert response.json() == refused(message)
    assert closed_by_server(sock, CLOSE_WITHIN)


def test_a_head_over_the_byte_limit_is_a_431(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health", {"X-Big": "b" * MAX_HEAD}))
        assert_refused_and_closed(sock, 431, f"request head is larger than {MAX_HEAD} bytes")


def test_a_head_that_grows_past_the_limit_without_ending_is_a_431_before_its_timeout(gateway):
    """One header line sent in pieces and never finished: refused once it is too long, not held until the
    header timeout (which would make it a 408)."""
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: ")
        for _ in range(8):
            sock.sendall(b"a" * 512)
            time.sleep(0.01)
        assert_refused_and_closed(sock, 431, f"request head is larger than {MAX_HEAD} bytes")


def test_a_request_target_over_the_byte_limit_is_a_431(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health?" + "q" * MAX_HEAD))
        assert_refused_and_closed(sock, 431, f"request head is larger than {MAX_HEAD} bytes")


def test_more_header_lines_than_the_limit_is_a_431(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health", {f"X-{i}": "1" for i in range(MAX_COUNT)}))  # and Host
        assert_refused_and_closed(sock, 431, f"request head has more than {MAX_COUNT} header lines")


def test_a_head_at_the_limits_is_served_on_a_connection_that_stays_open(gateway):
    headers = {f"X-{i}": "1" for i in range(MAX_COUNT - 2)}  # with Host: 19 lines
    headers["X-Pad"] = ""
    size = len(head("GET", "/health", headers))
    headers["X-Pad"] = "p" * (MAX_HEAD - size - 64)
    with connect(gateway.port) as sock:
        for _ in range(2):
            sock.sendall(head("GET", "/health", headers))
            assert read_response(sock).status == 200


def test_a_head_slower_than_the_timeout_is_a_408(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and the blank line never comes
        assert_refused_and_closed(sock, 408, "request head not received within 1 s")


def test_the_timeout_counts_from_the_first_byte_of_each_head(gateway):
    """A connection kept alive: its second head, trickled, is timed from its own first byte; trickling
    does not reset the clock."""
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health"))
        assert read_response(sock).status == 200
        started = time.monotonic()
        for byte in b"GET /health HTTP/1.1\r\n":
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
            if time.monotonic() - started > 1.5:
                break
        assert_refused_and_closed(sock, 408, "request head not received within 1 s")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(gateway):
    with connect(gateway.port, timeout=CLOSE_WITHIN) as sock:
        assert sock.recv(100) == b""  # the end of the stream, with nothing before it


def test_an_idle_keep_alive_connection_is_closed(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health"))
        assert read_response(sock).status == 200
        assert closed_by_server(sock, CLOSE_WITHIN)


def test_the_server_goes_on_serving(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(head("GET", "/health", {"Connection": "close"}))
        assert read_response(sock).status == 200
