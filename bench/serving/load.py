"""The load generator: one level of load (a `LoadShape`) over a list of request bodies, every request timed.

One aiohttp session per level with a connection pool as large as the requests in flight (an open loop with
no cap opens one connection per outstanding request, as a crowd of clients would). A progress bar on stderr
counts finished requests. Results come back in the order of the bodies, whatever order they finished in.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass

import aiohttp

from bench.serving.load_shapes import LoadShape, arrival_offsets
from bench.serving.request import RequestResult, send


@dataclass
class LevelRun:
    shape: LoadShape
    results: list[RequestResult]
    duration_s: float
    """From the first send to the last completion."""
    client_cpu_s: float
    """CPU this process used meanwhile: on a small machine the load generator competes with the server."""


def session_for(in_flight: int | None, timeout_s: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=(in_flight + 1) if in_flight else 0, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


async def run_level(url: str, endpoint: str, payloads: list[dict], shape: LoadShape, *, headers: dict | None = None,
                    timeout_s: float = 600.0, seed: int = 0, progress: bool = True,
                    session: aiohttp.ClientSession | None = None) -> LevelRun:
    """Send every body in `payloads` to `url` as `shape` says and time each one."""
    if not payloads:
        raise ValueError("no requests to send")
    own_session = session is None
    session = session or session_for(shape.in_flight_limit, timeout_s)
    bar = _progress_bar(len(payloads), shape.label, progress)
    results: list[RequestResult | None] = [None] * len(payloads)

    async def one(index: int) -> None:
        results[index] = await send(session, url, endpoint, payloads[index], headers)
        if bar is not None:
            bar.update(1)

    try:
        cpu_start, start = time.process_time(), time.perf_counter()
        if shape.closed:
            await _closed_loop(one, len(payloads), shape.concurrency)
        else:
            offsets = arrival_offsets(len(payloads), shape.request_rate, shape.burstiness, seed)
            await _open_loop(one, offsets, shape.max_concurrency, start)
        duration, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        if bar is not None:
            bar.close()
        if own_session:
            await session.close()
    return LevelRun(shape, list(results), duration, cpu)


async def _closed_loop(one, count: int, concurrency: int) -> None:
    pending = iter(range(count))

    async def worker() -> None:
        for index in pending:  # one shared iterator: each request goes to exactly one worker
            await one(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def _open_loop(one, offsets: list[float], cap: int | None, start: float) -> None:
    gate = asyncio.Semaphore(cap) if cap else contextlib.nullcontext()

    async def capped(index: int) -> None:
        async with gate:
            await one(index)

    tasks = []
    for index, offset in enumerate(offsets):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(capped(index)))
    await asyncio.gather(*tasks)


def _progress_bar(total: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"turnout bench {label}", unit="req", file=sys.stderr, leave=False,
                dynamic_ncols=True)
