"""Per-request deadlines, enforced wherever the router waits on a request's behalf.

A request's deadline (`GenerateRequest.deadline`: `--request-timeout`, or a gRPC call's own deadline if
sooner) bounds every wait the router makes for it: in its model's queue, and for each delta from its
backend. Its `patience` (the read timeout OpenAI's clients send as `x-stainless-read-timeout`: how long they
wait for each next byte) bounds each such wait on its own: a non-streamed answer is one wait, a stream's
first token another. When either passes, the wait is abandoned with `DeadlineExceeded` and the backend
stream is closed, which aborts the work in the engine: the request's slot is free within a step, not after
a generation nobody waits for any more.

A draining server pulls every live deadline in to the end of its drain timeout (`pull_in`), so streams still
running then end with an error event instead of a silent cut.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from backends.errors import TurnoutError
from server.admission import DeadlineExceeded

T = TypeVar("T")


class Deadline:
    def __init__(self, at: float | None, patience: float | None = None):
        """`at`: time.monotonic() by which the request must be done; `patience`: the longest one wait may take
        (None: no bound, for either)."""
        self.at, self.patience = at, patience
        self._error: Callable[[], TurnoutError] = self._expired
        self._timeout: asyncio.Timeout | None = None

    def _expired(self) -> TurnoutError:
        if self.at is not None and time.monotonic() >= self.at - 0.001:
            return DeadlineExceeded("the request did not finish within its deadline; its work was stopped")
        return DeadlineExceeded(f"no output within the client's timeout ({self.patience:g} s, its "
                                "x-stainless-read-timeout); its work was stopped")

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """`await awaitable`, abandoned (and the error raised) once the deadline passes. Without a deadline the
        wait is still under a (disarmed) timeout, which a drain can arm."""
        delays = [d for d in (self.patience, None if self.at is None else max(0.0, self.at - time.monotonic()))
                  if d is not None]
        delay = min(delays) if delays else None
        try:
            async with asyncio.timeout(delay) as timeout:
                self._timeout = timeout
                try:
                    return await awaitable
                finally:
                    self._timeout = None
        except TimeoutError:
            raise self._error() from None

    def pull_in(self, at: float, error: Callable[[], TurnoutError]) -> None:
        """Bring the deadline forward to `at` (never back), failing with `error()` when it passes; a wait
        under way is rescheduled."""
        if self.at is not None and self.at <= at:
            return
        self.at, self._error = at, error
        if self._timeout is not None:
            loop = asyncio.get_running_loop()
            self._timeout.reschedule(loop.time() + max(0.0, at - time.monotonic()))
