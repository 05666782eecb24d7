"""Latency summaries. Kept free of numpy so the unit test and the load generator import nothing heavy."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default method),
    so numbers here compare directly with those of vLLM's and other numpy-based benchmarks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: Sequence[float]) -> dict | None:
    """Mean, p50/p90/p99, min and max in milliseconds; None when there is nothing to summarize (for example
    time to first token of non-streamed requests), so a report never shows a made-up zero."""
    if not seconds:
        return None
    ms = [s * 1000 for s in seconds]
    summary = {"mean": sum(ms) / len(ms)}
    summary.update({f"p{q}": percentile(ms, q) for q in PERCENTILES})
    summary.update({"min": min(ms), "max": max(ms), "count": len(ms)})
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


def median_run(runs: Sequence[dict], key: str) -> dict:
    """The run whose `key` is the median (the lower middle one for an even count), with every run's value
    added as `runs_<key>` so a reader sees the spread. A real run, not an average of runs, so its other
    fields (latencies, token counts) stay consistent with each other."""
    if not runs:
        raise ValueError("median_run of no runs")
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], f"runs_{key}": [r[key] for r in ordered]}
