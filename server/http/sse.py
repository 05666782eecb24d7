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


def response(events) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
