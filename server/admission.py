"""Admission: what the gateway refuses before (or instead of) any backend work, and its errors.

- Keys (server/keys.py): a missing or wrong key is `Unauthenticated` (401), a model the key may not use
  `PermissionDenied` (403).
- Rate limits per key (server/rate_limits.py): `RateLimited` (429, with when to retry).
- A request's fan-out: its cost is not its size in bytes: one completion request with 256 prompts and
  `n` = 16 queued 4,096 sequences, and a normal request sent 3 s later waited 15.5 s behind them. The
  number of sequences one request may start is bounded (`RouterSettings.max_sequences_per_request`).
- Each model's bounded, fair waiting queue (server/admission_queue.py): `QueueFull` (429) beyond it.
- Deadlines (`--request-timeout`, a client's own timeout): `DeadlineExceeded` (504); the work is aborted.
- A draining server (SIGTERM, server/drain.py): new requests get `Draining` (503, with when to retry).
"""

from __future__ import annotations

from backends.errors import InvalidRequest, Overloaded, TurnoutError, Unavailable
from backends.types import SamplingParams


class Unauthenticated(TurnoutError):
    """No API key, or one the server does not know."""


class PermissionDenied(TurnoutError):
    """The API key is valid but may not use this model."""


class RateLimited(Overloaded):
    """The key has used its requests or tokens for now; `retry_after` says when enough are back."""


class QueueFull(Overloaded):
    """The model's waiting queue is at its bound (requests or prompt tokens)."""


class Draining(Unavailable):
    """The server is shutting down: it finishes what it has and takes nothing new."""


class DeadlineExceeded(TurnoutError):
    """The request ran past its deadline; its work in the backend was aborted."""


def sequences_per_prompt(params: SamplingParams) -> int:
    """How many sequences the engine runs for one prompt: beams, best_of's candidates, or n."""
    if params.use_beam_search:
        return max(params.n, params.beam_width)
    return max(params.n, params.best_of or 0)


def check_fan_out(num_prompts: int, params: SamplingParams, limit: int) -> None:
    """InvalidRequest when the request would start more than `limit` sequences."""
    per_prompt = sequences_per_prompt(params)
    total = num_prompts * per_prompt
    if total > limit:
        detail = f"{num_prompts} prompt(s) x {per_prompt} sequence(s) each (n, best_of or beam_width)"
        param = "prompt" if num_prompts > 1 else ("beam_width" if params.use_beam_search else
                                                   "best_of" if (params.best_of or 0) > params.n else "n")
        raise InvalidRequest(f"this request would start {total} sequences ({detail}); this server allows at most "
                             f"{limit} per request (max_sequences_per_request)", param=param)
