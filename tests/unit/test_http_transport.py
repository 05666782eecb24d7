"""Our uvicorn protocol (server/http/transport.py): writes coalesced per event-loop pass, on a real event
loop; requests that do not parse answered in JSON, over raw sockets."""

import asyncio
import json
import socket

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backends.types import ModelInfo
from server.app import build_app
from server.http.transport import CoalescingTransport, protocol_over
from server.router import Router
from tests.inert_backend import InertBackend


class RecordingTransport:
    """Stands in for the socket transport: records what reaches it."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof_written = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


async def test_writes_of_one_loop_pass_reach_the_socket_as_one_write_after_it():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"5\r\nhello\r\n")
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n"]
    transport.write(b"later")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"later"]


async def test_close_sends_what_is_pending_first_and_abort_drops_it():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"0\r\n\r\n")
    transport.close()
    assert inner.writes == [b"0\r\n\r\n"] and inner.closed
    await asyncio.sleep(0)  # the flush scheduled by the write finds nothing left to send
    assert inner.writes == [b"0\r\n\r\n"]

    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.writes == [] and inner.aborted


async def test_write_eof_sends_what_is_pending_first():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 413 Content Too Large\r\n\r\n")
    transport.write_eof()
    assert inner.writes == [b"HTTP/1.1 413 Content Too Large\r\n\r\n"] and inner.eof_written


async def test_nothing_is_written_to_a_transport_that_is_closing():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"data")
    inner.closed = True  # the peer went away meanwhile
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_everything_else_is_the_wrapped_transports():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert transport.is_closing() is False


def test_a_finished_response_is_written_before_the_app_returns():
    """Through uvicorn with our protocol: the client has the whole response while the app is still busy
    after its last send (as it is when it closes streams and writes metrics and the access log)."""
    import threading
    import time

    import httpx
    import uvicorn

    from server.http.transport import http_protocol
    from tests.server_thread import free_port

    returned_at = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        time.sleep(1.0)  # busy after the last send, holding the event loop
        returned_at.append(time.monotonic())

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=http_protocol(), lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        received_at = time.monotonic()
        assert response.text == "done"
        while not returned_at:
            time.sleep(0.01)
        assert received_at < returned_at[0]
    finally:
        server.should_exit = True
        thread.join(5)


class Idle(InertBackend):
    info = ModelInfo(name="idle", max_model_len=64)

    async def generate(self, request):
        raise AssertionError("a request that does not parse never reaches a backend")
        yield


@pytest.fixture(scope="module", params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def gateway(request):
    """The app behind uvicorn with our protocol over each parser `http_protocol` may pick."""
    import threading
    import time

    import uvicorn

    from tests.server_thread import free_port

    port = free_port()
    app = build_app(Router({"idle": Idle()}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=protocol_over(request.param)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def exchange(address: str, request: bytes) -> bytes:
    """Writes `request` on a new connection; everything the server sent until it closed the connection."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # b"": the server closed the connection (a timeout fails the test)
            received += chunk
    return received


MALFORMED = {
    "bad header line": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    "invalid request line": b"NOT AN HTTP REQUEST LINE\r\n\r\n",
    "bad chunk size": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_that_does_not_parse_gets_a_json_400_and_the_connection_closes(gateway, request_bytes):
    response = exchange(gateway, request_bytes)  # returns only once the server closed the connection
    head, body = response.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": {"message": "Invalid HTTP request received.",
                                          "type": "invalid_request_error", "param": None, "code": None}}
    # and the server goes on serving
    assert exchange(gateway, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 200 OK\r\n")
