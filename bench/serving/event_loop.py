"""The load generator's event loop: uvloop (the loop turnout's server runs on) where it is installed, else
asyncio's. The load generator shares the machine's cores with the server it measures, so every microsecond it
spends per streamed chunk is taken from the server: at concurrency 32 on 2 cores it spent 40-43 us of CPU
per streamed token on uvloop against 46-53 on asyncio's loop (four alternating runs), and the server
streamed ~3% more."""

from __future__ import annotations

import asyncio


def run_client(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
