"""Server-sent events as the OpenAI API sends them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.responses import Response, StreamingResponse

from server import errors

DONE = b"data: [DONE]\n\n"


# Built once: json.dumps with options builds an encoder per call, a third of its cost per streamed token.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(payload) -> str:
    return _ENCODER.encode(payload)


def event(payload: dict) -> bytes:
    return f"data: {_dumps(payload)}\n\n".encode()


class ChunkEncoder:
    """Encodes a stream's chunks; the fields every chunk repeats (id, model, ...) are serialised once."""

    def __init__(self, base: dict, trailer: dict | None = None):
        self._head = "data: " + _dumps(base)[:-1] + ',"choices":['
        self._tail = ("]," + _dumps(trailer)[1:] if trailer else "]}") + "\n\n"

    def chunk(self, choice: dict) -> bytes:
        return (self._head + _dumps(choice) + self._tail).encode()


def openai_error_events(exc: Exception) -> list[bytes]:
    """How an OpenAI stream that fails after its 200 head ends: an error event and `[DONE]`, so clients
    see the failure instead of a silently truncated answer."""
    return [event(errors.openai_body(errors.to_turnout_error(exc))), DONE]


class EventStreamResponse(StreamingResponse):
    """An event stream whose head goes out only with its first event.

    The handler returns it before generation has produced anything; it waits for the first event itself,
    watching for the client to leave meanwhile (a client that leaves during a long queue or prefill
    aborts its request then, not when its first token is ready). A failure before the first event (a
    request the backend rejects, an overloaded or missing model) is answered by `error_response(exc)`, a
    plain error with its own status, as if the handler had raised it; a failure after it ends the stream
    with `error_events(exc)`.

    The server writes what a connection sends during one loop pass as one segment
    (server/http/transport.py), so head and first event arrive together and the client wakes once, to a
    usable event; likewise, events the backend delivers in one burst (remote upstreams, several choices).
    The events are closed however the response ends, so a client that leaves aborts its generation at
    once."""

    def __init__(self, events, error_response: Callable[[Exception], Response],
                 error_events: Callable[[Exception], list[bytes]]):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._error_response, self._error_events = error_response, error_events

    async def __call__(self, scope, receive, send) -> None:
        """Stream on this task while a watcher task waits for the client to disconnect and then cancels
        the stream. uvicorn (ASGI spec 2.3) drops what is sent after a disconnect without a word, so
        something must listen; Starlette's own listener is an anyio task group around two tasks, which took
        ~0.25 ms from the handler's return to the first event at concurrency 1."""
        streaming = asyncio.current_task()
        state = {"streaming": True, "client_left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if state["streaming"]:  # the stream is suspended at an await inside _stream
                state["client_left"] = True
                streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._stream(scope, receive, send)
        except asyncio.CancelledError:
            if not state["client_left"]:
                raise
            streaming.uncancel()  # our own cancellation, consumed: the request simply ends
        finally:
            state["streaming"] = False
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _stream(self, scope, receive, send) -> None:
        events = self.body_iterator
        try:
            try:
                first = await anext(events, b"")
            except Exception as exc:  # nothing sent yet: an error response with its status
                await self._error_response(exc)(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            try:
                async for chunk in events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception as exc:
                for chunk in self._error_events(exc):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await events.aclose()


def response(events, error_response: Callable[[Exception], Response] = errors.openai_error_response,
             error_events: Callable[[Exception], list[bytes]] = openai_error_events) -> EventStreamResponse:
    """An OpenAI-style event stream of `events` (encoded events, not started yet); TGI's routes pass
    their own error shapes."""
    return EventStreamResponse(events, error_response, error_events)
