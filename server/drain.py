"""Graceful drain: what SIGTERM (or SIGINT) does to a serving process.

Kubernetes sends SIGTERM and, `terminationGracePeriodSeconds` later, SIGKILL; meanwhile it takes the pod
out of its Service once readiness fails. So on the first signal:

1. GET /ready turns 503 at once (and the gRPC health service NOT_SERVING at its next poll), so load
   balancers stop sending;
2. new generation requests get 503 `draining` with Retry-After (the listening socket stays open: a request
   that still arrives gets an answer it can act on, not a refused connection);
3. requests in flight, streams and queued requests alike, run to completion, for at most `drain_timeout`
   seconds; streams still running then end with an error event (never a silent cut), since their
   deadlines are pulled in to the end of the drain (server/deadlines.py);
4. then the server stops as usual (gRPC with it) and the process exits 0.

A second signal stops at once (exit status 128 + the signal, as if it had killed the process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import uvicorn

from server.router import Router

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_SETTLE_S = 2.0
"""After the drain timeout: how long cut streams get to write their error events before the server stops."""


async def drain(router: Router, timeout: float) -> None:
    """Stop taking requests and wait until those in flight are done, `timeout` seconds at most."""
    started = time.monotonic()
    ends_at = started + timeout
    router.start_drain(ends_at, timeout)
    logger.warning("draining: no new requests; %d in flight get up to %.0f s to finish", router.in_flight, timeout)
    while router.in_flight and time.monotonic() < ends_at:
        await asyncio.sleep(_POLL_S)
    if cut := router.in_flight:
        logger.warning("drain timeout: %d request(s) still running end with an error event", cut)
    while router.in_flight and time.monotonic() < ends_at + _SETTLE_S:
        await asyncio.sleep(_POLL_S)
    logger.warning("drained in %.1f s", time.monotonic() - started)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM/SIGINT drains (see the module doc) before it stops, and whose
    process then exits 0; a second signal stops at once."""

    def __init__(self, config: uvicorn.Config, router: Router, drain_timeout: float):
        super().__init__(config)
        self.router, self.drain_timeout = router, drain_timeout
        self._drain_started = False
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig, frame) -> None:
        """uvicorn's signal handler. Signals it handles are not re-raised when it stops, so the process exits 0."""
        if not self._drain_started and not self.should_exit and self.drain_timeout > 0:
            self._drain_started = True
            # A signal handler runs between two bytecodes of the loop's thread: start the drain from the loop.
            asyncio.get_event_loop().call_soon_threadsafe(self._start_drain)
            return
        if self._drain_started:
            # Stop at once: what is still running is abandoned, and nothing waits on it (letting asyncio cancel
            # a gRPC server in the middle of its shutdown crashes grpc's core). Exit as the signal would.
            logger.warning("second signal during the drain: stopping at once")
            logging.shutdown()
            os._exit(128 + sig)
        self.should_exit = True

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        try:
            await drain(self.router, self.drain_timeout)
        finally:
            self.should_exit = True
