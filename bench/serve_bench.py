"""Load generator for any OpenAI-compatible server: N requests, at most C in flight, one JSON report.

Each of `concurrency` workers sends its next request as soon as its previous one finishes (a closed loop,
like vLLM's `--max-concurrency`), so the server always sees about C requests. Throughput is total output
tokens (from `usage`) over the wall time from the first send to the last completion.

    python -m bench.serve_bench --base-url http://127.0.0.1:8000/v1 --model turnout-tiny --concurrency 32

Reuse from Python: `report = await run_load(base_url, model, concurrency=32, num_requests=64)`.

This is the engineering report our own benchmarks read (engine_bench, gateway_overhead, sampling_bench,
grpc_vs_sse); the requests are sent and timed by `turnout bench`'s load generator (bench/serving/), so both
measure the same way. For a user-facing benchmark with vLLM's metrics, sweeps and plots: `turnout bench`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench import prompts as prompt_source
from bench.prompts import Prompt
from bench.serving.event_loop import run_client
from bench.serving.load import run_level, session_for
from bench.serving.load_shapes import LoadShape
from bench.serving.request import ENDPOINTS, RequestResult, build_payload
from bench.stats import summarize_ms

__all__ = ["report", "run_client", "run_load", "run_load_in_own_process"]


def run_load_in_own_process(base_url: str, model: str, prompts: list[Prompt], num_requests: int, *,
                            concurrency: int, output_tokens: int, stream: bool = True,
                            prompt_tokens: int = 64) -> dict:
    """`run_load` as `python -m bench.serve_bench` in a process of its own, as a real client runs, and its
    report. A benchmark's own process may hold a model and its libraries (engine_bench: ~400k objects): a
    load generator running there paused for the garbage collector's full collections over all of them (13 in
    one engine_bench run, up to 207 ms each), and the measured server's rate dropped with it."""
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        prompts_file, out = Path(tmp) / "prompts.json", Path(tmp) / "report.json"
        prompts_file.write_text(json.dumps([p.token_ids if p.token_ids is not None else p.text for p in prompts]))
        command = [sys.executable, "-m", "bench.serve_bench", "--base-url", base_url, "--model", model,
                   "--concurrency", str(concurrency), "--num-requests", str(num_requests),
                   "--prompt-tokens", str(prompt_tokens), "--output-tokens", str(output_tokens),
                   "--stream" if stream else "--no-stream", "--prompts-file", str(prompts_file), "--out", str(out)]
        finished = subprocess.run(command, capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"the load generator failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
        return json.loads(out.read_text())


async def run_load(
    base_url: str,
    model: str,
    *,
    concurrency: int,
    num_requests: int,
    prompt_tokens: int = 64,
    output_tokens: int = 64,
    stream: bool = True,
    endpoint: str = "completions",
    warmup: int = 0,
    temperature: float = 0.0,
    prompts: list[Prompt] | None = None,
    timeout_s: float = 600.0,
    extra_body: dict | None = None,
) -> dict:
    """Run one load level and return its report (see `report`). `prompts` defaults to `num_requests +
    warmup` distinct prompts tokenized by the server; pass your own to give several runs the same workload
    (request i uses prompts[i % len(prompts)]; warm-up requests use prompts from the end of the list).
    `extra_body` fields are added to every request (sampling parameters, logprobs, ...)."""
    if concurrency < 1 or num_requests < 1 or warmup < 0:
        raise ValueError(f"need concurrency >= 1, num_requests >= 1, warmup >= 0; got {concurrency}, "
                         f"{num_requests}, {warmup}")
    url = f"{base_url.rstrip('/')}/{'chat/completions' if endpoint == 'chat' else 'completions'}"
    if prompts is None:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            prompts = await prompt_source.from_server(http, base_url, model, num_requests + warmup, prompt_tokens)

    def payload(i: int) -> dict:
        prompt = prompts[i % len(prompts)]
        # Token ids where the endpoint takes them, so the prompt's length is exact.
        as_ids = endpoint == "completions" and prompt.token_ids is not None
        return build_payload(endpoint, model, prompt.token_ids if as_ids else prompt.text, output_tokens,
                             stream=stream, temperature=temperature, extra_body=extra_body)

    closed = LoadShape(concurrency=concurrency)
    async with session_for(concurrency, timeout_s) as session:
        if warmup:
            await run_level(url, endpoint, [payload(-1 - i) for i in range(warmup)], closed, session=session,
                            progress=False)
        level = await run_level(url, endpoint, [payload(i) for i in range(num_requests)], closed, session=session,
                                progress=False)
    config = {"base_url": base_url, "model": model, "endpoint": endpoint, "stream": stream,
              "concurrency": concurrency, "num_requests": num_requests, "prompt_tokens": prompt_tokens,
              "output_tokens": output_tokens, "temperature": temperature, "warmup": warmup,
              "extra_body": extra_body or {}}
    return report(config, level.results, level.duration_s, level.client_cpu_s)


def report(config: dict, results: list[RequestResult], duration_s: float, client_cpu_s: float) -> dict:
    """The JSON report: throughput over the whole run, latency distributions over successful requests. A
    response without `usage` is a failure here: these benchmarks count tokens from the server alone."""
    for r in results:
        if r.ok and r.output_tokens is None:
            r.fail("invalid_response", "response carried no usage (is stream_options.include_usage supported?)")
    ok = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    short = sum(1 for r in ok if r.output_tokens != config["output_tokens"])
    return {
        "config": config,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "requests_with_unexpected_output_length": short,
        "duration_s": round(duration_s, 4),
        "total_prompt_tokens": sum(r.prompt_tokens for r in ok),
        "total_output_tokens": output_tokens,
        "output_tokens_per_s": round(output_tokens / duration_s, 2) if duration_s > 0 else None,
        "requests_per_s": round(len(ok) / duration_s, 3) if duration_s > 0 else None,
        "ttft_ms": summarize_ms([r.ttft for r in ok if r.ttft is not None]),
        "itl_ms": summarize_ms([gap for r in ok for gap in r.inter_token_gaps]),
        "tpot_ms": summarize_ms([t for r in ok if (t := r.time_per_output_token) is not None]),
        "e2e_latency_ms": summarize_ms([r.latency for r in ok]),
        "client_cpu_s": round(client_cpu_s, 3),
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.serve_bench",
        description="Drive an OpenAI-compatible server at a fixed concurrency and report throughput "
        "(output tokens/s, requests/s) and latency (TTFT, inter-token, end-to-end: mean, p50, p90, p99) as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="server URL including /v1")
    p.add_argument("--model", required=True, help="model name as the server serves it (GET /v1/models)")
    p.add_argument("--concurrency", type=_positive, default=1, help="requests in flight at once")
    p.add_argument("--num-requests", type=_positive, default=32, help="timed requests (after warm-up)")
    p.add_argument("--prompt-tokens", type=_positive, default=64,
                   help="tokens per prompt (exact when the server has POST /tokenize; each prompt distinct)")
    p.add_argument("--output-tokens", type=_positive, default=64,
                   help="max_tokens per request, with ignore_eos so each generates exactly this many")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="stream (SSE); TTFT and inter-token latency exist only when streaming")
    p.add_argument("--endpoint", choices=ENDPOINTS, default="completions",
                   help="completions sends token-id prompts; chat sends the prompt text as one user message")
    p.add_argument("--warmup", type=int, default=0, help="untimed requests sent first, at the same concurrency")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--extra-body", type=json.loads, default=None,
                   help='JSON object merged into every request, e.g. \'{"top_p": 0.9, "logprobs": 5}\'')
    p.add_argument("--prompts-file", default=None,
                   help="JSON list of prompts (each a list of token ids, or a string) to send instead of "
                        "fetching new ones: request i sends prompt i (mod the list's length)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prompts = None
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts = [Prompt(p, None) if isinstance(p, str) else Prompt("", p) for p in json.load(f)]
    result = run_client(run_load(
        args.base_url, args.model, concurrency=args.concurrency, num_requests=args.num_requests,
        prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens, stream=args.stream,
        endpoint=args.endpoint, warmup=args.warmup, temperature=args.temperature, timeout_s=args.timeout,
        extra_body=args.extra_body, prompts=prompts,
    ))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
