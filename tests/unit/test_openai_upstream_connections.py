"""The openai backend's connection handling against a scripted upstream (raw asyncio sockets): a pooled
connection the upstream closed is retried, a dead upstream still fails, and closing a stream closes its
connection. The HTTP client itself is tested in test_http1.py."""

import asyncio
import json

import pytest

from backends.errors import UpstreamError
from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig
from backends.types import GenerateRequest, SamplingParams
from tests.loopback_http import LoopbackServer, read_request

MODELS = json.dumps({"data": [{"id": "m", "max_model_len": 64}]}).encode()


def _sse(tokens: int) -> bytes:
    events = [{"choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]} for i in range(tokens - 1)]
    events.append({"choices": [{"index": 0, "text": " end", "finish_reason": "length"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": tokens, "total_tokens": tokens + 2}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


class ScriptedUpstream(LoopbackServer):
    """Answers GET /models and streams completions; `drop` says how many completion requests to answer by
    closing the connection without a response (what a client sees when it reuses a connection the server
    has just closed)."""

    def __init__(self, drop: int = 0, tokens: int = 3, stall: bool = False):
        self.drop, self.tokens, self.stall = drop, tokens, stall
        self.completions = 0
        self.connections = 0
        self.closed_by_client = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head, _ = await read_request(reader)
                if head.startswith(b"GET /v1/models"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(MODELS)).encode() + b"\r\n\r\n" + MODELS)
                    await writer.drain()
                    continue
                self.completions += 1
                if self.completions <= self.drop:
                    writer.close()
                    return
                body = _sse(self.tokens)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                # Stalling: one event, then nothing until the client goes away. Otherwise everything up to
                # the usage chunk, and `[DONE]` a moment later, as a real server's last write may come.
                cut = body.index(b"\n\n") + 2 if self.stall else body.index(b"data: [DONE]")
                for part in (body[:cut], body[cut:]):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    if self.stall:
                        await reader.read()
                        self.closed_by_client.set()
                        return
                    await asyncio.sleep(0.02)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


async def _backend(url: str) -> OpenAIUpstreamBackend:
    backend = OpenAIUpstreamBackend(OpenAIUpstreamConfig(url=url, model="m", connect_timeout=2, read_timeout=5))
    await backend.start()
    return backend


def _request() -> GenerateRequest:
    return GenerateRequest(request_id="r", model="m", prompt="hi", sampling=SamplingParams(max_tokens=3))


async def _text(backend) -> str:
    return "".join([d.text async for d in backend.generate(_request())])


async def test_a_connection_the_upstream_closed_is_retried_on_a_new_one():
    async with ScriptedUpstream(drop=1) as upstream:
        backend = await _backend(upstream.url)
        try:
            assert await _text(backend) == " t0 t1 end"
            assert upstream.completions == 2 and upstream.connections >= 2
            assert await _text(backend) == " t0 t1 end"  # and the pool keeps working
        finally:
            await backend.close()


async def test_an_upstream_that_keeps_closing_connections_is_an_upstream_error():
    async with ScriptedUpstream(drop=100) as upstream:
        backend = await _backend(upstream.url)
        try:
            with pytest.raises(UpstreamError, match="closed the connection before responding"):
                await _text(backend)
            # the pooled connection (from start()'s GET /models) once, then a new one, which is not retried
            assert upstream.completions == 2
        finally:
            await backend.close()


async def test_finished_streams_reuse_one_connection():
    async with ScriptedUpstream() as upstream:
        backend = await _backend(upstream.url)
        try:
            for _ in range(5):
                assert await _text(backend) == " t0 t1 end"
            assert upstream.connections == 1
        finally:
            await backend.close()


async def test_closing_a_stream_early_closes_its_connection():
    async with ScriptedUpstream(tokens=50, stall=True) as upstream:
        backend = await _backend(upstream.url)
        try:
            stream = backend.generate(_request())
            await anext(stream)
            await stream.aclose()
            await asyncio.wait_for(upstream.closed_by_client.wait(), timeout=5)
        finally:
            await backend.close()
