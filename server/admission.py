"""Checks of a request as a whole, made by every front end before the router starts anything.

A request's cost is not its size in bytes: one completion request with 256 prompts and `n` = 16 queued
4,096 sequences, and a normal request sent 3 s later waited 15.5 s behind them. The number of sequences
one request may start is bounded (`RouterSettings.max_sequences_per_request`).
"""

from __future__ import annotations

from backends.errors import InvalidRequest
from backends.types import SamplingParams


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
