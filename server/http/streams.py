"""Plumbing between backend streams and a response: merging several prompts' streams, and cancelling a
non-streamed request's work when its client leaves. (A streamed response waits for its first event
itself: server/http/sse.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request

from backends.types import OutputDelta

_DONE = object()


async def merge(streams: list[AsyncIterator[OutputDelta]]) -> AsyncIterator[tuple[int, OutputDelta]]:
    """Yield (stream index, delta) from all streams as they arrive. Closing the merged stream closes all."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:
            async for delta in only:
                yield 0, delta
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[OutputDelta]) -> None:
        try:
            async with aclosing(stream):
                async for delta in stream:
                    queue.put_nowait((i, delta))
            queue.put_nowait(_DONE)
        except Exception as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_disconnected(request: Request, work):
    """Run `work` (a coroutine) unless the client disconnects first; then cancel it (aborting generation)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


class ClientDisconnected(Exception):
    """The client went away before the response was ready; nothing is sent."""
