"""Each model's waiting line: a bounded queue in front of its backends, fair across API keys.

A model runs at most `capacity` sequences in its backends at once: the sum of its replicas' batch sizes
(`ModelInfo.max_running`), plus a quarter more so that an engine always finds the next request waiting
when one finishes (a request let in only after another ended would reach the engine a step late). Beyond
that, requests wait here, not in the engine, and leave the line fairly: the next one comes from the next
API key in turn, so one key's burst does not starve another key's requests. The line is bounded, in
requests and in prompt tokens; a request beyond either bound is refused at once with `QueueFull` (429) and
a Retry-After estimated from how fast requests have been finishing. A request that leaves while waiting
(its client gone, its deadline passed) gives up its place. Backends that report no batch size (remote
servers, which queue themselves) are not held here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from server.admission import QueueFull

HEADROOM = 0.25


@dataclass(eq=False)
class _Waiter:
    tenant: str
    cost: int
    prompt_tokens: int
    admitted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AdmissionQueue:
    def __init__(self, model: str, max_queued: int, max_queued_prompt_tokens: int, capacity: int | None = None):
        self.model = model
        self.max_queued, self.max_queued_prompt_tokens = max_queued, max_queued_prompt_tokens
        self.running = 0
        """Sequences let through and not yet done."""
        self._lines: OrderedDict[str, deque[_Waiter]] = OrderedDict()  # tenant -> its waiters, tenants in turn
        self.waiting = 0
        self.queued_prompt_tokens = 0
        self._recent: deque[float] = deque(maxlen=64)  # when requests finished, for Retry-After
        self.capacity: int | None = None
        self.set_capacity(capacity)

    def set_capacity(self, sequences: int | None) -> None:
        """`sequences`: what the model's backends run at once (None: no limit, nothing waits here)."""
        self.capacity = None if sequences is None else sequences + max(1, int(sequences * HEADROOM))
        self._let_in()  # a replica that joined may have made room for those waiting

    async def enter(self, tenant: str, cost: int, prompt_tokens: int) -> None:
        """Take `cost` sequences of the model's capacity, waiting in line for them if need be (QueueFull when
        the line is full); `leave(cost)` gives them back."""
        if self._fits(cost) and not self.waiting:
            self.running += cost
        else:
            await self._wait(tenant, cost, prompt_tokens)

    def leave(self, cost: int) -> None:
        self.running -= cost
        self._recent.append(time.monotonic())
        self._let_in()

    def _fits(self, cost: int) -> bool:
        # A request bigger than the whole capacity still runs, alone, rather than never.
        return self.capacity is None or self.running + cost <= self.capacity or self.running == 0

    async def _wait(self, tenant: str, cost: int, prompt_tokens: int) -> None:
        if self.waiting >= self.max_queued or self.queued_prompt_tokens + prompt_tokens > self.max_queued_prompt_tokens:
            bound = (f"{self.max_queued} requests" if self.waiting >= self.max_queued
                     else f"{self.max_queued_prompt_tokens} prompt tokens")
            raise QueueFull(f"model {self.model!r} is at capacity and its waiting queue is full ({bound}); "
                            "retry later", retry_after=self._retry_after())
        waiter = _Waiter(tenant, cost, prompt_tokens)
        self._lines.setdefault(tenant, deque()).append(waiter)
        self.waiting += 1
        self.queued_prompt_tokens += prompt_tokens
        try:
            await waiter.admitted
        except BaseException:
            if waiter.admitted.done() and not waiter.admitted.cancelled():
                self.running -= cost  # let in just as it was cancelled: give the place back
                self._let_in()
            else:
                self._forget(waiter)
            raise

    def _forget(self, waiter: _Waiter) -> None:
        line = self._lines.get(waiter.tenant)
        if line is not None and waiter in line:
            line.remove(waiter)
            self.waiting -= 1
            self.queued_prompt_tokens -= waiter.prompt_tokens
            if not line:
                del self._lines[waiter.tenant]

    def _let_in(self) -> None:
        """Admit waiters while they fit, taking tenants in turn (the one served goes to the back)."""
        while self._lines:
            tenant, line = next(iter(self._lines.items()))
            waiter = line[0]
            if not self._fits(waiter.cost):
                return
            self._forget(waiter)
            if tenant in self._lines:
                self._lines.move_to_end(tenant)
            self.running += waiter.cost
            waiter.admitted.set_result(None)

    def _retry_after(self) -> float:
        """Seconds until the line has likely moved on: its length over the recent finishing rate."""
        if len(self._recent) < 2:
            return 1.0
        span = self._recent[-1] - self._recent[0]
        rate = (len(self._recent) - 1) / span if span > 0 else float("inf")
        return min(60.0, max(1.0, self.waiting / rate))
