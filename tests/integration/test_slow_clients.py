"""Slow clients and the connection limit (server/http/connection_limits.py), over raw sockets: clients
trickling their heads a byte at a time, more of them than the server takes connections, neither stop a
normal client from being served nor stay open; at the limit, the connection idle longest makes room for a
new one, and when every connection has a request in flight a new one gets a 503 in JSON."""

import asyncio
import json
import threading
import time

import httpx

from backends.types import ModelInfo, OutputDelta
from server.http.limits import HttpLimits
from tests.inert_backend import InertBackend
from tests.raw_http import closed_by_server, connect, head, post, read_response
from tests.server_thread import ServerThread


class Stalling(InertBackend):
    """Never produces a token: each request it takes stays in flight until its client leaves."""

    info = ModelInfo(name="stalling", max_model_len=64)

    def __init__(self):
        self.in_flight = 0
        self.lock = threading.Lock()

    async def generate(self, request):
        with self.lock:
            self.in_flight += 1
        try:
            await asyncio.sleep(3600)
            yield OutputDelta(token_ids=[1], text="never")
        finally:
            with self.lock:
                self.in_flight -= 1


def serve(**limits) -> tuple[ServerThread, Stalling]:
    backend = Stalling()
    return ServerThread({"stalling": backend}, limits=HttpLimits(**limits)).start(), backend


def served(url: str) -> bool:
    """A normal client, on a connection of its own."""
    return httpx.get(url + "/health", timeout=5, headers={"connection": "close"}).status_code == 200


def test_clients_trickling_their_heads_neither_stop_a_normal_client_nor_stay_open():
    """30 slow clients against a limit of 8 connections, each sending one byte of its head every 0.1 s:
    a normal client is served every round, and every slow client is closed, by the limit (the oldest
    make room) or at the latest by the header timeout."""
    server, _ = serve(max_connections=8, header_timeout=2.0)
    slow = []
    try:
        trickle = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        for position in range(25):  # 2.5 s, past the header timeout
            if len(slow) < 30:
                slow.extend(connect(server.port) for _ in range(10))
            for sock in slow:
                try:
                    sock.sendall(trickle[position:position + 1])
                except OSError:  # closed by the server: reset when written to
                    pass
            assert served(server.url), f"a normal client was not served in round {position}"
            time.sleep(0.1)
        assert all(closed_by_server(sock, within=5) for sock in slow)
    finally:
        for sock in slow:
            sock.close()
        server.stop()


def test_at_the_limit_the_connection_idle_longest_makes_room_for_a_new_one():
    server, _ = serve(max_connections=4)
    idle = [connect(server.port) for _ in range(4)]
    try:
        time.sleep(0.2)  # all four made, in order, before the fifth
        assert served(server.url)
        assert closed_by_server(idle[0], within=5)
        for still_open in idle[1:]:  # none of the others was closed for it
            still_open.sendall(head("GET", "/health"))
            still_open.settimeout(5)
            assert read_response(still_open).status == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_when_every_connection_has_a_request_in_flight_a_new_one_gets_a_503():
    server, backend = serve(max_connections=2)
    body = json.dumps({"model": "stalling", "prompt": "x", "stream": True}).encode()
    busy = [connect(server.port) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(post("/v1/completions", body))
        deadline = time.monotonic() + 10
        while backend.in_flight < 2:
            assert time.monotonic() < deadline, "the requests did not reach the backend"
            time.sleep(0.01)
        with connect(server.port) as sock:
            sock.sendall(head("GET", "/health"))
            response = read_response(sock)
            assert response.status == 503 and response.headers["connection"] == "close"
            assert response.json() == {"error": {
                "message": "the server is at its limit of 2 connections; retry later",
                "type": "service_unavailable", "param": None, "code": None}}
            assert closed_by_server(sock, within=5)
        busy.pop().close()  # one client leaves: its request ends, and a new connection has room
        while backend.in_flight > 1:
            assert time.monotonic() < deadline, "the request of the client that left did not end"
            time.sleep(0.01)
        assert served(server.url)
    finally:
        for sock in busy:
            sock.close()
        server.stop()


def test_a_limit_of_one_still_serves_one_client_after_another():
    server, _ = serve(max_connections=1)
    try:
        for _ in range(3):
            with connect(server.port) as sock:
                sock.sendall(head("GET", "/health"))
                assert read_response(sock).status == 200
    finally:
        server.stop()
