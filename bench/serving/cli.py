"""`turnout bench`: a serving benchmark against any OpenAI-compatible server (turnout, vLLM, TGI's OpenAI
route, ...), with the metrics of `vllm bench serve`; `turnout bench compare` runs it against two servers."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import aiohttp

from bench.serving import options, plots, table
from bench.serving.event_loop import run_client
from bench.serving.sweep import run_sweep
from bench.serving.target import Target, first_model, openai_base
from bench.serving.tokenizers import LocalTokenizer, ServerTokenizer, TokenizerUnavailable
from bench.serving.workloads import build_sets, shared_prefix

DESCRIPTION = """\
Benchmark a running OpenAI-compatible server the way `vllm bench serve` does, so the numbers compare
directly: request throughput, output and total token throughput, TTFT, TPOT, ITL and end-to-end latency
(mean, median, p90, p99 and --percentiles), and goodput against SLOs (--goodput). One run per load level:
a closed loop at each --concurrency, or an open loop of Poisson/gamma arrivals at each --request-rate.
Each level gets its own prompts (no level is served from a cache the one before filled).

Writes a table to the terminal, one JSON per level (vLLM's saved-result keys where the meaning is the same)
and PNG plots (latency CDFs; throughput, TTFT p50/p99 and goodput against the load) to --result-dir.
Failed requests are counted by kind, 429s apart, never hidden; the exit status is 1 when any failed.

  turnout bench --base-url http://127.0.0.1:8000/v1 --concurrency 1 8 32 --num-prompts 64
  turnout bench --request-rate 2 4 8 --burstiness 0.5 --goodput ttft:500 tpot:50
  turnout bench --dataset shared-prefix --num-prefixes 4 --prompts-per-prefix 16 --prefix-len 512
  turnout bench --dataset conversations --dataset-path sharegpt.jsonl --endpoint chat
  turnout bench compare --help    (two servers, one after the other, alternating rounds, a ratio table)
"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                formatter_class=_Formatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1",
                   help="the server's OpenAI base URL (what the openai client takes); a bare host:port gets /v1")
    p.add_argument("--model", default=None, help="model name to request; default: the first of GET /v1/models")
    options.add_request_options(p)
    options.add_workload_options(p)
    options.add_load_options(p)
    options.add_output_options(p)
    return p


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def default_result_dir() -> Path:
    return Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")


def workload_description(args) -> dict:
    """The workload's settings, for the result files."""
    keys = {"random": ("num_prompts", "input_len", "output_len", "range_ratio"),
            "shared-prefix": ("num_prefixes", "prompts_per_prefix", "prefix_len", "suffix_len", "output_len"),
            "conversations": ("num_prompts", "dataset_path", "output_len", "shuffle", "max_total_len")}
    return {"dataset": args.dataset, **{k: getattr(args, k) for k in keys[args.dataset]}, "seed": args.seed,
            "ignore_eos": args.ignore_eos, "temperature": args.temperature, "token_ids": args.token_ids}


def requests_per_level(args) -> int:
    return shared_prefix.per_set(args) if args.dataset == "shared-prefix" else args.num_prompts


def report(series: dict[str, list], args, slos: dict, result_dir: Path) -> list[str]:
    """Print the table and the problems; write the plots; return the problems."""
    found = []
    for name, runs in series.items():
        rows = [(run.shape.label, run.metrics) for run in runs]
        errors = {run.shape.label: run.result["turnout_bench"]["error_examples"] for run in runs}
        if len(series) > 1:
            print(f"\n{name}")
        print(table.summary_table(rows, args.percentiles))
        found.extend(table.problems(rows, errors))
    for line in found:
        print(line)
    if args.plots:
        written = plots.write_all(series, result_dir, args.percentiles, slos)
        print(f"plots: {', '.join(str(p) for p in written)}")
    return found


async def _run(args, shapes, slos, headers) -> int:
    base_url = openai_base(args.base_url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout)) as control:
        model = args.model or await first_model(control, base_url, headers)
        target = Target(base_url, model, args.endpoint, headers)
        tokenizer = (LocalTokenizer(args.tokenizer) if args.tokenizer
                     else ServerTokenizer(control, target.root, model, headers))
        per_level = requests_per_level(args)
        sets = await build_sets(args, tokenizer, len(shapes) + (1 if args.warmup else 0), per_level)
        result_dir = Path(args.result_dir) if args.result_dir else default_result_dir()
        label = args.label or model
        runs = await run_sweep(target, shapes, sets[: len(shapes)], args, tokenizer=tokenizer,
                               tokenizer_id=tokenizer.name, slos_ms=slos, workload=workload_description(args),
                               label=label, result_dir=result_dir,
                               warmup_samples=sets[-1] if args.warmup else None)
    report({label: runs}, args, slos, result_dir)
    print(f"results: {result_dir}/")
    return 1 if any(run.metrics["failed"] for run in runs) else 0


def main(argv: list[str] | None = None, prog: str = "turnout bench") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from bench.serving.compare import main as compare_main

        return compare_main(argv[1:], prog=f"{prog} compare")
    args = build_parser(prog).parse_args(argv)
    try:
        shapes, slos, headers = options.run_settings(args, os.environ)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        return run_client(_run(args, shapes, slos, headers))
    except (TokenizerUnavailable, RuntimeError, aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
