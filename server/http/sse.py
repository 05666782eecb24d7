"""Server-sent events as the OpenAI API sends them."""

from __future__ import annotations

import asyncio
import contextlib
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


async def coalesced(chunks):
    """Send what is ready together: each socket write costs far more than encoding a chunk, and when the
    backend delivers tokens in bursts (remote upstreams, several choices) one write per burst is enough.
    The producer runs one item ahead in its own task; a lone chunk is written as soon as it exists."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def produce() -> None:
        try:
            async for chunk in chunks:
                queue.put_nowait(chunk)
        except BaseException as exc:  # handed to the consumer, which re-raises it in the response
            queue.put_nowait(exc)
            return
        queue.put_nowait(end)

    producer = asyncio.ensure_future(produce())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            done = batch[-1] is end or isinstance(batch[-1], BaseException)
            data = b"".join(c for c in (batch[:-1] if done else batch))
            if data:
                yield data
            if done:
                if isinstance(batch[-1], BaseException):
                    raise batch[-1]
                return
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        await chunks.aclose()


def response(events) -> StreamingResponse:
    return StreamingResponse(
        coalesced(_ending_in_error_event(events)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
