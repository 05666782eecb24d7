"""A streaming client that leaves before its first token aborts its request at once, not when the first
token would have been sent. A gateway-logic test with a backend that never produces a token: the real
engine's prefill is too short to leave in."""

import asyncio
import threading

import httpx
import pytest

from backends.types import ModelInfo, OutputDelta
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread


class StallingBackend(InertBackend):
    """Waits forever before its first delta; records when its stream is closed."""

    info = ModelInfo(name="stalling", max_model_len=64)

    def __init__(self):
        self.started = threading.Event()
        self.closed = threading.Event()

    async def generate(self, request):
        self.started.set()
        try:
            await asyncio.sleep(3600)
            yield OutputDelta(token_ids=[1], text="never")
        finally:
            self.closed.set()


@pytest.fixture(scope="module")
def stalling():
    backend = StallingBackend()
    server = ServerThread({"stalling": backend}).start()
    yield server, backend
    server.stop()


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"model": "stalling", "prompt": "x", "stream": True}),
    ("/v1/chat/completions", {"model": "stalling", "messages": [{"role": "user", "content": "x"}], "stream": True}),
    ("/generate_stream", {"inputs": "x", "parameters": {"max_new_tokens": 4}}),
])
def test_leaving_before_the_first_token_closes_the_backend_stream(stalling, path, body):
    server, backend = stalling
    backend.started.clear()
    backend.closed.clear()
    with pytest.raises(httpx.ReadTimeout):  # the head comes with the first event, which never comes
        with httpx.stream("POST", server.url + path, json=body, timeout=httpx.Timeout(5.0, read=0.5)):
            pass
    assert backend.started.is_set()
    assert backend.closed.wait(5), "the backend kept generating for a client that had left"
