"""Server-sent events as the OpenAI API sends them."""

from __future__ import annotations

import json

from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"


def _dumps(payload) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def event(payload: dict) -> bytes:
    return f"data: {_dumps(payload)}\n\n".encode()


class ChunkEncoder:
    """Encodes a stream's chunks; the fields every chunk repeats (id, model, ...) are serialised once."""

    def __init__(self, base: dict, trailer: dict | None = None):
        self._head = "data: " + _dumps(base)[:-1] + ',"choices":['
        self._tail = ("]," + _dumps(trailer)[1:] if trailer else "]}") + "\n\n"

    def chunk(self, choice: dict) -> bytes:
        return (self._head + _dumps(choice) + self._tail).encode()


async def _ending_in_error_event(events):
    """A stream that fails after its 200 header went out ends with an OpenAI-shaped error event and
    `[DONE]`, so clients see the failure instead of a silently truncated answer."""
    from server.errors import error_body, to_turnout_error

    try:
        async for chunk in events:
            yield chunk
    except Exception as exc:
        error = to_turnout_error(exc)
        yield event(error_body(error.message, error.error_type, error.param, error.code))
        yield DONE


class EventStreamResponse(StreamingResponse):
    """Sends its head only with its first event. The server writes what a connection sends during one
    loop pass as one segment (server/http/transport.py), so head and first event arrive together and the
    client wakes once, to a usable event; likewise, events the backend delivers in one burst (remote
    upstreams, several choices) and the last event with the end of the body. The events are closed however
    the response ends, so a client that leaves aborts its generation at once."""

    async def stream_response(self, send) -> None:
        events = self.body_iterator
        try:
            first = await anext(events, b"")
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await events.aclose()


def response(events) -> EventStreamResponse:
    return EventStreamResponse(
        _ending_in_error_event(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
