"""A scripted OpenAI-compatible upstream that fails on purpose, for testing how *our* load-test clients
(`turnout bench`, the locustfile) account for failures. It is no evidence about any real server.

The request's `model` picks what happens:
  ok            every token, usage, `data: [DONE]`
  error-event   two tokens, then `data: {"error": ...}` and `[DONE]` (a server that failed mid-stream)
  truncate      two tokens, then the connection is closed mid-body (a cut stream)
  no-done       every token and usage, a clean end of the body, but no `[DONE]` (silently truncated)
  rate-limited  429 queue_full with Retry-After, as turnout's bounded queue answers
  cycle         the five above in turn, one per request

It runs on its own thread and event loop, so clients in other processes or loops can use it, and counts
what it served per behaviour (`served`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import Counter

from tests.loopback_http import read_request

BEHAVIOURS = ("ok", "error-event", "truncate", "no-done", "rate-limited")


class FaultyUpstream:
    def __init__(self):
        self.served: Counter = Counter()
        self._lock = threading.Lock()
        self._cycle = itertools.cycle(BEHAVIOURS)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-upstream", daemon=True)
        self.port = 0

    def __enter__(self) -> FaultyUpstream:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the faulty upstream did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=256)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()

    def _pick(self, model: str) -> str:
        with self._lock:
            behaviour = next(self._cycle) if model == "cycle" else model
            self.served[behaviour] += 1
        return behaviour

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive
                head, body = await read_request(reader)
                method, path = head.split(b" ")[:2]
                if method == b"GET" and path.endswith(b"/models"):
                    _json(writer, 200, {"object": "list", "data": [{"id": b, "object": "model"} for b in BEHAVIOURS]})
                elif method == b"POST" and path.endswith(b"/completions"):
                    request = json.loads(body)
                    behaviour = self._pick(request.get("model", "ok"))
                    if not await self._answer(writer, behaviour, request, chat=path.endswith(b"/chat/completions")):
                        return
                else:
                    _json(writer, 404, {"error": {"message": "no such route", "type": "NotFound", "code": 404}})
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer, behaviour: str, request: dict, chat: bool) -> bool:
        """Write the answer; False when the connection is to be cut."""
        if behaviour == "rate-limited":
            _json(writer, 429, {"error": {"message": "the queue is full", "type": "rate_limit_error",
                                          "param": None, "code": "queue_full"}}, {"retry-after": "1"})
            return True
        tokens = int(request.get("max_tokens") or 8)
        if not request.get("stream"):
            text = " word" * tokens
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0,
                                                                                                  "text": text}
            _json(writer, 200, {"choices": [choice], "usage": {"prompt_tokens": 4, "completion_tokens": tokens}})
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(tokens if behaviour in ("ok", "no-done") else 2):
            choice = {"index": 0, "delta": {"content": " word"}} if chat else {"index": 0, "text": " word"}
            _chunk(writer, _event({"choices": [choice]}))
            await writer.drain()
            await asyncio.sleep(0.001)
        if behaviour == "truncate":
            writer.transport.abort()  # no terminating chunk: the body is cut
            return False
        if behaviour == "error-event":
            _chunk(writer, _event({"error": {"message": "the engine failed", "type": "internal_error",
                                             "code": "request_failed"}}) + b"data: [DONE]\n\n")
        else:
            usage = {"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": 4 + tokens}
            tail = _event({"choices": [], "usage": usage})
            _chunk(writer, tail + (b"data: [DONE]\n\n" if behaviour == "ok" else b""))
        writer.write(b"0\r\n\r\n")
        return True


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _chunk(writer, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _json(writer, status: int, payload: dict, headers: dict | None = None) -> None:
    body = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n{extra}\r\n".encode() + body)
