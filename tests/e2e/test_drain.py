"""Graceful drain of `turnout serve` as an orchestrator stops it: SIGTERM during active streams.

The streams run to their last token and `[DONE]`; meanwhile /ready is 503 and new requests get 503 with
Retry-After (HTTP) or UNAVAILABLE (gRPC); the process exits 0. Streams still running at the drain timeout
end with an error event, never a silent cut; a second SIGTERM stops at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from tests.grpc_client import generate_request, stub
from tests.server_thread import free_port, wait_ready

MODEL = "turnout-tiny"


class Served:
    def __init__(self, tmp_path, *args: str):
        self.port, self.grpc_port = free_port(), free_port()
        self.log = tmp_path / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(self.port), "--grpc-port", str(self.grpc_port),
             "--max-num-seqs", "32", *args], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_ready(self.port, self.proc, log_path=self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def served(tmp_path):
    servers = []

    def start(*args: str) -> Served:
        servers.append(Served(tmp_path, *args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


async def stream(http: httpx.AsyncClient, url: str, i: int, max_tokens: int, begun: list) -> tuple[int, list]:
    """(status, the stream's data payloads) of one streamed completion; `begun` gets its index once its first
    event is in."""
    body = {"model": MODEL, "prompt": f"The for statement {i}", "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "return_token_ids": True}
    payloads = []
    async with http.stream("POST", url + "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                payloads.append(line[6:])
                if len(payloads) == 1:
                    begun.append(i)
    return r.status_code, payloads


async def all_begun(begun: list, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(begun) < count:
        assert time.monotonic() < deadline, f"only {len(begun)} of {count} streams began"
        await asyncio.sleep(0.01)


def test_sigterm_lets_20_streams_finish_refuses_new_work_and_exits_0(served):
    server = served("--drain-timeout", "60")

    async def run():
        async with httpx.AsyncClient(timeout=120) as http:
            begun = []
            tasks = [asyncio.create_task(stream(http, server.url, i, 150, begun)) for i in range(20)]
            await all_begun(begun, 20)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await http.get(server.url + "/ready")
            refused = await http.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
            with pytest.raises(grpc.RpcError) as grpc_refused:
                await asyncio.to_thread(stub(f"127.0.0.1:{server.grpc_port}").Complete,
                                        generate_request(MODEL, "x", max_tokens=2), timeout=10)
            results = await asyncio.gather(*tasks)
            return signalled, ready, refused, grpc_refused.value, results

    signalled, ready, refused, grpc_refused, results = asyncio.run(run())
    assert ready.status_code == 503
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "draining"
    assert grpc_refused.code() == grpc.StatusCode.UNAVAILABLE
    for status, payloads in results:
        assert status == 200 and payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert "error" not in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "length"
        # Every token came (counted by id: a token that ends inside a character has no text of its own).
        assert sum(len(c["choices"][0].get("token_ids") or ()) for c in chunks if c["choices"]) == 150
    assert server.proc.wait(timeout=60) == 0
    assert time.monotonic() - signalled < 60


def test_streams_still_running_at_the_drain_timeout_end_with_an_error_event(served):
    server = served("--drain-timeout", "1")

    async def run():
        async with httpx.AsyncClient(timeout=120) as http:
            begun = []
            tasks = [asyncio.create_task(stream(http, server.url, i, 1000, begun)) for i in range(4)]
            await all_begun(begun, 4)
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    for status, payloads in asyncio.run(run()):
        assert status == 200 and payloads[-1] == "[DONE]"
        error = json.loads(payloads[-2])["error"]
        assert error["code"] == "draining" and "drain timeout" in error["message"]
    assert server.proc.wait(timeout=30) == 0


def test_a_second_sigterm_stops_at_once(served):
    server = served("--drain-timeout", "120")

    async def run():
        async with httpx.AsyncClient(timeout=120) as http:
            begun = []
            task = asyncio.create_task(stream(http, server.url, 0, 900, begun))
            await all_begun(begun, 1)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.proc.wait, 30)
            task.cancel()
            return code, time.monotonic() - started

    code, took = asyncio.run(run())
    assert took < 10, "the second signal did not stop the server at once"
    assert code == 128 + signal.SIGTERM
    assert "draining" in server.log.read_text()
