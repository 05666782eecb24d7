"""How requests are sent: a closed loop at a concurrency, or an open loop of arrivals at a request rate.

  closed loop (`--concurrency C`)  C requests in flight; each finished one is replaced at once (vLLM's
                                   `--max-concurrency C` with an unlimited rate). Shows what the server
                                   sustains; latency is the server's at that load.
  open loop (`--request-rate R`)   requests arrive on a schedule whatever the server does: gaps drawn from a
                                   gamma distribution of mean 1/R and shape `--burstiness` B (B = 1 is a
                                   Poisson process; B < 1 burstier, B > 1 more even; `inf` rate sends all at
                                   once). Shows queueing: latency grows without bound past what the server
                                   sustains. `--max-concurrency` may cap the requests in flight.

The schedule is vLLM's: the drawn gaps are summed and then scaled so that the last arrival falls at exactly
N/R seconds, which keeps throughput comparable between seeds; it is drawn once per run from `--seed`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadShape:
    concurrency: int | None = None
    """Closed loop: this many requests in flight. None for an open loop."""
    request_rate: float | None = None
    """Open loop: mean arrivals per second (math.inf: all at once). None for a closed loop."""
    burstiness: float = 1.0
    max_concurrency: int | None = None
    """Open loop only: at most this many in flight (later arrivals wait on the client)."""

    def __post_init__(self):
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("a load shape is either a concurrency or a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request rate must be > 0 (or inf), got {self.request_rate}")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be > 0, got {self.burstiness}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def closed(self) -> bool:
        return self.concurrency is not None

    @property
    def in_flight_limit(self) -> int | None:
        return self.concurrency if self.closed else self.max_concurrency

    @property
    def label(self) -> str:
        """`c8`, `rate4`, `rate2.5`, `rate-inf`: what tables, plots and result files call this level."""
        if self.closed:
            return f"c{self.concurrency}"
        if math.isinf(self.request_rate):
            return "rate-inf"
        return f"rate{self.request_rate:g}"

    @property
    def x_value(self) -> float:
        """The level as a number on a plot's x axis."""
        return float(self.concurrency if self.closed else self.request_rate)


def arrival_offsets(num_requests: int, request_rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds from the start at which each request is sent."""
    if math.isinf(request_rate):
        return [0.0] * num_requests
    rng = random.Random(seed)
    scale = 1.0 / (request_rate * burstiness)
    offsets, total = [], 0.0
    for _ in range(num_requests):
        total += rng.gammavariate(burstiness, scale)
        offsets.append(total)
    if offsets and offsets[-1] > 0:
        stretch = (num_requests / request_rate) / offsets[-1]
        offsets = [t * stretch for t in offsets]
    return offsets
