"""backends.openai.http1, the openai backend's HTTP/1.1 client, against scripted servers on loopback
(tests/loopback_http.py): body framings, keep-alive reuse and expiry, stale
connections, timeouts, early close, flow control, the connection limit and TLS."""

import asyncio
import ssl

import pytest
import trustme

from backends.openai.http1 import ConnectionPool, HTTPClientError
from tests.loopback_http import LoopbackServer, read_request


class Script(LoopbackServer):
    """A server that answers each request on a connection with the next of `responses` (bytes, or an
    async callable taking the reader and the writer); after the last one it closes the connection. Records
    the raw requests and counts connections."""

    def __init__(self, *responses, per_connection: bool = True):
        self.responses = list(responses)
        self.per_connection = per_connection  # each connection starts at the first response again
        self.requests: list[bytes] = []
        self.connections = 0
        self.client_closed = asyncio.Event()
        self._next = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = 0 if self.per_connection else None
        try:
            while True:
                self.requests.append(b"".join(await read_request(reader)))
                if index is None:
                    index, self._next = self._next, self._next + 1
                if index >= len(self.responses):
                    return
                response = self.responses[index]
                index = index + 1 if self.per_connection else None
                if callable(response):
                    await response(reader, writer)
                else:
                    writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
        finally:
            writer.close()


def ok(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + \
        b"content-length: %d\r\n\r\n%s" % (len(body), body)


def chunked(*parts: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + \
        b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def closing_after(data: bytes):
    """A response that writes `data` and closes the connection."""

    async def respond(reader, writer):
        writer.write(data)
        await writer.drain()
        writer.close()

    return respond


async def get(pool: ConnectionPool, target: str = "/v1/x", body: bytes = b"", **headers) -> tuple[int, bytes]:
    async with await pool.request("POST" if body else "GET", target, body, headers) as response:
        return response.status, await response.read()


async def test_content_length_and_chunked_bodies_on_one_kept_alive_connection():
    async with Script(ok(b"hello"), chunked(b"ab", b"cde"), ok(b"")) as server:
        pool = ConnectionPool(server.url)
        assert await get(pool) == (200, b"hello")
        assert await get(pool, body=b'{"a": 1}') == (200, b"abcde")
        assert await get(pool) == (200, b"")
        assert server.connections == 1
        await pool.close()


async def test_the_request_carries_method_target_host_length_and_headers():
    async with Script(ok(b"")) as server:
        pool = ConnectionPool(server.url, headers={"Authorization": "Bearer k"})
        await get(pool, "/v1/completions", b"{}", **{"X-Request-Id": "r-1"})
        request = server.requests[0]
        assert request.startswith(b"POST /v1/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{pool.port}\r\n".encode() in request
        for header in (b"Authorization: Bearer k\r\n", b"X-Request-Id: r-1\r\n", b"Content-Length: 2\r\n"):
            assert header in request
        assert request.endswith(b"\r\n\r\n{}")
        await pool.close()


async def test_a_response_split_at_every_byte_arrives_whole():
    response = chunked(b"data: 1\n\n", b"data: 2\n\n") + ok(b"next")

    async def byte_by_byte(reader, writer):
        for i in range(len(response) - len(ok(b"next"))):
            writer.write(response[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    async with Script(byte_by_byte, ok(b"next")) as server:
        pool = ConnectionPool(server.url)
        assert await get(pool) == (200, b"data: 1\n\ndata: 2\n\n")
        assert await get(pool) == (200, b"next")  # nothing of the first response was left to confuse this one
        assert server.connections == 1
        await pool.close()


async def test_a_body_without_length_ends_with_the_connection_and_is_not_reused():
    until_close = closing_after(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nto the end")
    async with Script(until_close) as server:
        pool = ConnectionPool(server.url)
        assert await get(pool) == (200, b"to the end")
        assert not pool._idle
        await pool.close()


async def test_connection_close_from_the_server_is_honoured():
    async with Script(ok(b"a", b"connection: close"), ok(b"b")) as server:
        pool = ConnectionPool(server.url)
        assert await get(pool) == (200, b"a")
        assert await get(pool) == (200, b"a")  # a new connection starts the script again
        assert server.connections == 2
        await pool.close()


async def test_an_error_status_is_a_response_not_an_exception():
    body = b'{"error": {"message": "no"}}'
    response = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)
    async with Script(response) as server:
        pool = ConnectionPool(server.url)
        async with await pool.request("GET", "/v1/x") as r:
            assert (r.status, r.headers["content-type"], await r.read()) == (400, "application/json", body)
        await pool.close()


async def test_a_stale_pooled_connection_is_retried_once_on_a_new_one():
    # One response per connection: the server closes the connection once it has answered.
    async with Script(ok(b"first")) as server:
        pool = ConnectionPool(server.url)
        assert await get(pool) == (200, b"first")
        await asyncio.sleep(0.05)  # the close is seen: the pool skips that connection without trying it
        assert await get(pool) == (200, b"first")
        pool._idle[0].closed = False  # a close the event loop has not yet seen when the connection is picked
        assert await get(pool) == (200, b"first")
        assert server.connections == 3
        await pool.close()


async def test_a_new_connection_closed_without_a_response_is_an_error():
    async with Script() as server:
        pool = ConnectionPool(server.url)
        with pytest.raises(HTTPClientError, match="closed the connection before responding"):
            await get(pool)
        assert len(server.requests) == 1  # not retried: the upstream may have acted on it
        await pool.close()


async def test_a_connection_cut_mid_body_is_an_error_after_the_data_that_came():
    cut = closing_after(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
    async with Script(cut) as server:
        pool = ConnectionPool(server.url)
        received = []
        with pytest.raises(HTTPClientError, match="mid-response"):
            async with await pool.request("GET", "/v1/x") as r:
                async for data in r.iter_bytes():
                    received.append(data)
        assert received == [b"partial"]
        await pool.close()


async def test_garbage_instead_of_http_is_an_error():
    async with Script(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as server:
        pool = ConnectionPool(server.url)
        with pytest.raises(HTTPClientError, match="invalid HTTP"):
            await get(pool)
        await pool.close()


async def test_nobody_listening_is_a_connect_error():
    async with Script() as server:
        url = server.url
    pool = ConnectionPool(url, connect_timeout=2)
    with pytest.raises(HTTPClientError, match="cannot connect"):
        await get(pool)
    await pool.close()


async def test_read_timeout_bounds_the_head_and_each_wait_between_chunks():
    async def silent(reader, writer):
        await reader.read()  # until the client closes

    async def stalls_mid_body(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()

    for response in (silent, stalls_mid_body):
        async with Script(response) as server:
            pool = ConnectionPool(server.url, read_timeout=0.2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await get(pool)
            assert loop.time() - started < 2
            await asyncio.wait_for(server.client_closed.wait(), 2)  # and the connection was closed
            await pool.close()


async def test_closing_a_response_early_closes_its_connection_and_frees_its_slot():
    async def endless(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"5\r\nevent\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with Script(endless) as server:
        pool = ConnectionPool(server.url, max_connections=1)
        async with await pool.request("GET", "/v1/x") as r:
            async for _ in r.iter_bytes():
                break
        await asyncio.wait_for(server.client_closed.wait(), 2)
        assert not pool._idle and not pool._open
        async with await pool.request("GET", "/v1/x") as r:  # the only slot is free again
            assert r.status == 200
        await pool.close()


async def test_cancelling_a_request_that_waits_for_its_head_closes_the_connection():
    async def silent(reader, writer):
        await reader.read()  # until the client closes

    async with Script(silent) as server:
        pool = ConnectionPool(server.url, max_connections=1)
        task = asyncio.create_task(get(pool))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.client_closed.wait(), 2)
        assert pool._slots._value == 1
        await pool.close()


async def test_requests_beyond_max_connections_wait_for_a_free_one():
    async def slow(reader, writer):
        await asyncio.sleep(0.1)
        writer.write(ok(b"x"))

    async with Script(*[slow] * 6, per_connection=False) as server:
        pool = ConnectionPool(server.url, max_connections=2)
        results = await asyncio.gather(*(get(pool) for _ in range(6)))
        assert results == [(200, b"x")] * 6
        assert server.connections == 2
        await pool.close()


async def test_idle_connections_past_keepalive_timeout_are_replaced():
    async with Script(ok(b"a"), ok(b"b")) as server:
        pool = ConnectionPool(server.url, keepalive_timeout=0.1)
        assert await get(pool) == (200, b"a")
        await asyncio.sleep(0.2)
        assert await get(pool) == (200, b"a")  # a new connection: the script starts again
        assert server.connections == 2
        await pool.close()


async def test_a_large_body_is_read_with_flow_control():
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB, beyond the 1 MiB at which reading pauses
    async with Script(ok(body)) as server:
        pool = ConnectionPool(server.url)
        async with await pool.request("GET", "/v1/x") as r:
            received = bytearray()
            async for data in r.iter_bytes():
                received += data
                await asyncio.sleep(0.001)  # a slow consumer
        assert bytes(received) == body
        await pool.close()


async def test_https_verifies_the_upstreams_certificate():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    script = Script(ok(b"secret"), ok(b"secret"))
    script.ssl_context = server_context
    async with script:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        pool = ConnectionPool(script.url, ssl_context=trusting)
        assert await get(pool) == (200, b"secret")
        assert await get(pool) == (200, b"secret")
        assert script.connections == 1  # kept alive over TLS too
        await pool.close()

        pool = ConnectionPool(script.url)  # the system's CAs do not know this one
        with pytest.raises(HTTPClientError, match="CERTIFICATE_VERIFY_FAILED"):
            await get(pool)
        await pool.close()


@pytest.mark.parametrize("headers", [{"X-Request-Id": "a\r\nEvil: 1"}, {"X-Request-Id": "a\nb"},
                                     {"X-Bad\r\nName": "v"}, {"Sp ace": "v"}, {"": "v"}, {"X": "caf\u00e9\u2603"}])
async def test_a_header_that_could_break_out_of_its_line_is_refused_before_anything_is_sent(headers):
    pool = ConnectionPool("http://127.0.0.1:9")  # nothing listens: a refused header never gets that far
    with pytest.raises(ValueError, match="break out of its line"):
        await pool.request("POST", "/v1/completions", b"{}", headers)
    with pytest.raises(ValueError, match="break out of its line"):
        ConnectionPool("http://127.0.0.1:9", headers=headers)
    with pytest.raises(ValueError, match="request target"):
        await pool.request("GET", "/v1/models HTTP/1.1\r\nHost: evil")
    await pool.close()
