"""One run's JSON file. Its keys are those of `vllm bench serve --save-result` wherever the meaning is the
same (date, backend, model_id, tokenizer_id, num_prompts, request_rate, burstiness, max_concurrency,
duration, completed, failed, total_input_tokens, total_output_tokens, request_throughput, request_goodput,
output_throughput, total_token_throughput, max_output_tokens_per_s, max_concurrent_requests, and
mean_/median_/std_/p<q>_ of ttft, tpot, itl and e2el in ms; with --save-detailed its per-request lists), so
tools written for its files read ours. What vLLM has no key for is under `turnout_bench`: failures by kind
(429s apart), short outputs, the goodput SLOs, the workload and the client's own CPU time."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from bench.serving.load import LevelRun


def record(*, target, run: LevelRun, metrics: dict, args, label: str, tokenizer_id: str,
           workload: dict, slos_ms: dict) -> dict:
    shape = run.shape
    ours_only = ("good_requests", "failures", "short_outputs")
    result = {
        "date": time.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai-chat" if target.endpoint == "chat" else "openai",
        "backend": "openai-chat" if target.endpoint == "chat" else "openai",
        "label": label,
        "model_id": target.model,
        "tokenizer_id": tokenizer_id,
        "num_prompts": len(run.results),
        "request_rate": "inf" if shape.closed or math.isinf(shape.request_rate) else shape.request_rate,
        "burstiness": shape.burstiness,
        "max_concurrency": shape.in_flight_limit,
        **{k: v for k, v in metrics.items() if k not in ours_only},
    }
    errors = sorted({r.error for r in run.results if not r.ok})
    result["turnout_bench"] = {
        "level": shape.label,
        "load": "closed loop" if shape.closed else "open loop",
        "base_url": target.base_url,
        "endpoint": target.endpoint,
        "stream": args.stream,
        "workload": workload,
        "failures": metrics["failures"],
        "rate_limited": metrics["failures"].get("rate_limited", 0),
        "error_examples": errors[:5],
        "short_outputs": metrics["short_outputs"],
        "expected_output_tokens": sum(r.expected_output_tokens or 0 for r in run.results),
        "goodput_slos_ms": slos_ms or None,
        "good_requests": metrics["good_requests"],
        "client_cpu_s": round(run.client_cpu_s, 3),
    }
    if args.save_detailed:
        result.update({
            "input_lens": [r.prompt_tokens for r in run.results],
            "output_lens": [(r.output_tokens or 0) if r.ok else 0 for r in run.results],
            "ttfts": [r.ttft or 0.0 for r in run.results],
            "itls": [r.inter_token_gaps for r in run.results],
            "latencies": [r.latency for r in run.results],
            "start_times": [r.start for r in run.results],
            "errors": [r.error or "" for r in run.results],
            "generated_texts": [r.text for r in run.results],
        })
    return result


def write(result: dict, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
