"""The metrics of one run, defined as `vllm bench serve` defines them and named as its saved result names
them, so a number here and one there mean the same thing:

  request_throughput      completed requests / duration (first send -> last completion)
  output_throughput       output tokens of completed requests (from `usage`) / duration
  total_token_throughput  (prompt + output tokens of completed requests) / duration
  request_goodput         completed requests that met every `--goodput` SLO / duration (None without SLOs)
  ttft                    time to first token, per request
  tpot                    time per output token after the first, per request: (e2el - ttft) / (tokens - 1),
                          for requests of more than one token
  itl                     inter-token latency: every gap between successive chunks, pooled over requests
  e2el                    end-to-end latency, per request
  each latency            mean_, median_, std_ (population) and p<q>_ for each requested percentile q, in
                          milliseconds; percentiles interpolate linearly (numpy's default)
  max_output_tokens_per_s the most token chunks that arrived in any one-second bucket of the run, and
  max_concurrent_requests the most requests active in any such second (vLLM's "peak" numbers)

Latencies and throughput count completed requests only; failed ones are counted by kind (`failures`). A
goodput SLO on TPOT counts a one-token request as TPOT 0, as vLLM does. Where vLLM reports 0 for a latency it
could not measure (TTFT of unstreamed requests), this reports None.
"""

from __future__ import annotations

import math
from collections import Counter

from bench.serving.request import RequestResult
from bench.stats import percentile

LATENCIES = ("ttft", "tpot", "itl", "e2el")
SLO_NAMES = ("ttft", "tpot", "e2el")


def percentile_key(q: float) -> str:
    """vLLM's spelling: p99, p99.9."""
    return f"p{int(q)}" if float(q).is_integer() else f"p{q}"


def latency_values(results: list[RequestResult]) -> dict[str, list[float]]:
    """Seconds, completed requests only."""
    ok = [r for r in results if r.ok]
    return {
        "ttft": [r.ttft for r in ok if r.ttft is not None],
        "tpot": [t for r in ok if (t := r.time_per_output_token) is not None],
        "itl": [gap for r in ok for gap in r.inter_token_gaps],
        "e2el": [r.latency for r in ok],
    }


def summarize(name: str, seconds: list[float], percentiles: list[float]) -> dict:
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms",
            *(f"{percentile_key(q)}_{name}_ms" for q in percentiles)]
    if not seconds:
        return dict.fromkeys(keys)
    ms = [s * 1000 for s in seconds]
    mean = sum(ms) / len(ms)
    values = [mean, percentile(ms, 50), math.sqrt(sum((v - mean) ** 2 for v in ms) / len(ms)),
              *(percentile(ms, q) for q in percentiles)]
    return dict(zip(keys, values, strict=True))


def is_good(result: RequestResult, slos_ms: dict[str, float]) -> bool:
    measured = {"ttft": result.ttft, "tpot": result.time_per_output_token or 0.0, "e2el": result.latency}
    return all(measured[name] is not None and measured[name] * 1000 <= limit for name, limit in slos_ms.items())


def peaks(results: list[RequestResult]) -> tuple[float, int]:
    """(most token chunks in one second, most requests active in one second), over one-second buckets from
    the first send."""
    ok = [r for r in results if r.ok]
    if not ok:
        return 0.0, 0
    origin = min(r.start for r in ok)
    buckets = int(math.ceil(max(r.end for r in ok) - origin)) + 1
    tokens, active = [0] * buckets, [0] * buckets
    for r in ok:
        for t in r.chunk_times:
            tokens[min(buckets - 1, int(t - origin))] += 1
        for second in range(int(r.start - origin), min(buckets - 1, int(r.end - origin)) + 1):
            active[second] += 1
    return float(max(tokens)), max(active)


def compute(results: list[RequestResult], duration_s: float, percentiles: list[float],
            slos_ms: dict[str, float] | None = None) -> dict:
    ok = [r for r in results if r.ok]
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    good = sum(1 for r in ok if is_good(r, slos_ms)) if slos_ms else None
    peak_tokens, peak_requests = peaks(results)
    metrics = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": prompt_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration_s,
        "request_goodput": None if good is None else good / duration_s,
        "output_throughput": output_tokens / duration_s,
        "total_token_throughput": (prompt_tokens + output_tokens) / duration_s,
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_requests,
    }
    for name, seconds in latency_values(results).items():
        metrics.update(summarize(name, seconds, percentiles))
    metrics["good_requests"] = good
    metrics["failures"] = dict(Counter(r.kind or "other" for r in results if not r.ok))
    metrics["short_outputs"] = sum(1 for r in ok if r.expected_output_tokens is not None
                                   and (r.output_tokens or 0) < r.expected_output_tokens)
    return metrics
