"""Rate limits per API key: requests per minute and tokens per minute, as token buckets.

Each limited key has two buckets that hold a minute's allowance and refill continuously (a key limited to
600 requests a minute gets one back every 0.1 s, and may burst up to 600). A request takes one request and
its prompt's tokens (estimated at admission: the prompt is not tokenized yet) or is refused with
`RateLimited` and the seconds until enough is back; when it ends, its real usage settles the tokens bucket
(completion tokens added, the prompt estimate corrected). The bucket may go below zero on settlement: the
next requests then wait for it, so a key cannot outrun its limit with long completions.

Every answer to a limited key carries OpenAI's `x-ratelimit-*` headers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from server.admission import RateLimited
from server.keys import ApiKey

CHARS_PER_TOKEN = 4
"""For estimating a text prompt's tokens before tokenizing (English BPE is ~4 characters a token)."""


def estimate_tokens(texts: list[str], token_ids: list[list[int]] = ()) -> int:
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts) + sum(len(ids) for ids in token_ids)


class TokenBucket:
    def __init__(self, per_minute: float, now: float):
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self._updated = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` is in the bucket (0 when it is now)."""
        self._refill(now)
        missing = min(amount, self.capacity) - self.level  # an amount over capacity waits for a full bucket
        return max(0.0, missing / self.rate)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def reset_seconds(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self._refill(now)
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class KeyBuckets:
    requests: TokenBucket | None
    tokens: TokenBucket | None


class Ticket:
    """One admitted request of a limited key: settles its tokens when it ends, and gives its headers."""

    def __init__(self, limiter: RateLimiter, buckets: KeyBuckets, estimate: int):
        self._limiter, self._buckets, self._estimate = limiter, buckets, estimate
        self._settled = False

    def settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        if self._settled or self._buckets.tokens is None:
            return
        self._settled = True
        used = (prompt_tokens or self._estimate) + completion_tokens
        with self._limiter.lock:
            self._buckets.tokens.take(used - self._estimate, time.monotonic())

    def headers(self) -> dict[str, str]:
        now = time.monotonic()
        out = {}
        with self._limiter.lock:
            for kind, bucket in (("requests", self._buckets.requests), ("tokens", self._buckets.tokens)):
                if bucket is None:
                    continue
                reset = bucket.reset_seconds(now)
                out[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
                out[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                out[f"x-ratelimit-reset-{kind}"] = _duration(reset)
        return out


class RateLimiter:
    """The buckets of every limited key. Admission runs on the event loop; settlement may run elsewhere
    (gRPC's and HTTP's telemetry both settle), so bucket changes take a lock."""

    def __init__(self):
        self._keys: dict[str, KeyBuckets] = {}
        self.lock = threading.Lock()

    def admit(self, key: ApiKey | None, prompt_tokens: int) -> Ticket | None:
        """A ticket for one request of `key` (None when the key has no limits), or RateLimited."""
        if key is None or (key.requests_per_minute is None and key.tokens_per_minute is None):
            return None
        now = time.monotonic()
        with self.lock:
            buckets = self._keys.get(key.name)
            if buckets is None:
                buckets = self._keys[key.name] = KeyBuckets(
                    TokenBucket(key.requests_per_minute, now) if key.requests_per_minute else None,
                    TokenBucket(key.tokens_per_minute, now) if key.tokens_per_minute else None)
            waits = {}
            if buckets.requests is not None:
                waits["requests"] = buckets.requests.wait_for(1, now)
            if buckets.tokens is not None:
                waits["tokens"] = buckets.tokens.wait_for(prompt_tokens, now)
            kind, wait = max(waits.items(), key=lambda item: item[1])
            if wait > 0:
                limit = key.requests_per_minute if kind == "requests" else key.tokens_per_minute
                raise RateLimited(f"rate limit of API key {key.name!r} reached: {limit:g} {kind} per minute; "
                                  f"retry in {wait:.1f} s", retry_after=wait)
            if buckets.requests is not None:
                buckets.requests.take(1, now)
            if buckets.tokens is not None:
                buckets.tokens.take(prompt_tokens, now)
        return Ticket(self, buckets, prompt_tokens)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s", "20ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"
