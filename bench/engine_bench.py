"""Our server against plain Hugging Face generation, on one model and one workload, in one run.

Default workload (the reference workload of the engine comparisons in bench/README.md): 32 distinct prompts of 64
tokens, 64 greedy output tokens each, EOS ignored, 2 torch threads everywhere. Measured:

  server_cN            `turnout serve` as a child process, driven over HTTP by bench.serve_bench at
                       concurrency N (streamed completions); plus start-up time to /ready, RSS, CPU used.
  sequential_generate  `model.generate`, one request at a time.
  padded_generate      one left-padded `model.generate` over all prompts (a static batch; reference only).
  generate_batch       transformers' continuous batching, persistent manager, warmed up.

Rounds interleave the methods (server c1, server c32, then each baseline, repeated) so that the machine's
drift over minutes does not land in the ratios.

The headline ratios are server@32 / sequential and server@32 / generate_batch (targets: >= 10x and >= 3x).

    python -m bench.engine_bench --model MODEL_DIR --out engine.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bench import hf_baselines
from bench.machine import OtherCpuMeter, machine_info
from bench.prompts import from_tokenizer
from bench.serve_bench import run_load_in_own_process
from bench.server_process import ServerProcess
from bench.stats import median_run

TARGETS = {"server_vs_sequential": 10.0, "server_vs_generate_batch": 3.0}


def resolve_model(model: str | None) -> str:
    """`--model`, else the bundled model; a clear error when neither exists."""
    if model is None:
        from server.cli import default_model_dir

        model = default_model_dir()
        if not Path(model, "config.json").is_file():
            raise SystemExit(f"engine_bench: the bundled model is not at {model} (not built yet?); "
                             "pass --model DIR (a transformers causal LM directory)")
    if not Path(model, "config.json").is_file():
        raise SystemExit(f"engine_bench: {model!r} is not a model directory (no config.json)")
    return model


def run_interleaved(args, model_dir: str, prompts) -> tuple[dict, dict]:
    """Server start-up and memory, then `repeats` rounds; each round runs the server at every concurrency
    level and then each HF baseline once, so every method's runs are spread over the same minutes. (On a
    shared 2-core machine the same code's speed drifts by tens of percent between minutes; measured one
    method after another, the drift would land in the ratios.) The server stays up, idle, during the HF
    runs; generate_batch's manager lives only during its own run."""
    server_args = ["--dtype", args.dtype, "--attn-implementation", args.attn_implementation,
                   "--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    timed = prompts[: args.num_prompts]
    timed_ids = [p.token_ids for p in timed]
    server_runs: dict[int, list[dict]] = {c: [] for c in args.concurrency}
    hf_runs: dict[str, list[dict]] = {}
    result: dict = {"levels": {}}
    with ServerProcess(model_dir, "bench", num_threads=args.threads, max_num_seqs=max(args.concurrency),
                       extra_args=server_args) as server:
        result["startup_s"] = round(server.startup_s, 3)
        result["rss_mb_after_load"] = server.rss_mb()
        loads = {c: {"concurrency": c, "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens,
                     "stream": True} for c in args.concurrency}
        for concurrency, load in loads.items():
            # Warm up with prompts the timed runs do not use, as a separate run so that the server CPU time
            # measured below covers the timed requests only.
            run_load_in_own_process(server.base_url, "bench", prompts[args.num_prompts:], concurrency, **load)
        # HF work runs on short-lived threads (hf_baselines.on_own_thread), never on this one: see there.
        own_thread = hf_baselines.on_own_thread
        model = None if args.skip_hf else own_thread(hf_baselines.load_model, model_dir, args.dtype,
                                                     args.attn_implementation)
        plain = {} if model is None else {
            "sequential_generate": own_thread(hf_baselines.sequential_generate, model, timed_ids,
                                              args.output_tokens),
            "padded_generate": own_thread(hf_baselines.padded_generate, model, timed_ids, args.output_tokens),
        }
        for round_number in range(1, args.repeats + 1):
            print(f"[engine_bench] round {round_number}/{args.repeats}", file=sys.stderr, flush=True)
            for concurrency, load in loads.items():
                cpu_before = server.cpu_seconds()
                report = run_load_in_own_process(server.base_url, "bench", timed, args.num_prompts, **load)
                if report["failed"] or report["requests_with_unexpected_output_length"]:
                    raise SystemExit(f"engine_bench: bad run at concurrency {concurrency}: {report['failed']} "
                                     f"failed, {report['requests_with_unexpected_output_length']} with the "
                                     f"wrong output length, errors {report['errors']}\n"
                                     f"server log:\n{server.log_tail()}")
                report["server_cpu_s"] = round(server.cpu_seconds() - cpu_before, 3)
                server_runs[concurrency].append(report)
            if model is None:
                continue
            for name, run in plain.items():
                hf_runs.setdefault(name, []).append(own_thread(run))
            # generate_batch computes on its manager's thread; this thread only waits for it.
            with hf_baselines.generate_batch(model, timed_ids, args.output_tokens,
                                             args.max_num_batched_tokens) as run:
                hf_runs.setdefault("generate_batch", []).append(run())
        result["rss_mb_after_runs"] = server.rss_mb()
    for concurrency, runs in server_runs.items():
        result["levels"][str(concurrency)] = {**median_run(runs, "output_tokens_per_s"),
                                              "runs_in_order_output_tokens_per_s": in_order(runs)}
    hf = {name: {**median_run(runs, "output_tokens_per_s"), "complete": all(r["complete"] for r in runs),
                 "runs_in_order_output_tokens_per_s": in_order(runs)}
          for name, runs in hf_runs.items()}
    return result, hf


def in_order(runs: list[dict]) -> list[float]:
    """Rates in the order the rounds ran (median_run's list is sorted)."""
    return [r["output_tokens_per_s"] for r in runs]


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarize(server: dict, hf: dict, top: str) -> dict:
    """Tokens/s of every method side by side, and the headline ratios."""
    tps = {f"server_c{c}": r["output_tokens_per_s"] for c, r in server["levels"].items()}
    tps.update({name: r["output_tokens_per_s"] for name, r in hf.items()})
    best = tps.get(f"server_c{top}")
    ratios = {
        "server_vs_sequential": ratio(best, tps.get("sequential_generate")),
        "server_vs_generate_batch": ratio(best, tps.get("generate_batch")),
        "server_vs_padded_generate": ratio(best, tps.get("padded_generate")),
    }
    return {"output_tokens_per_s": tps, f"ratios_at_concurrency_{top}": ratios,
            f"paired_ratios_at_concurrency_{top}": paired_ratios(server, hf, top),
            "meets_targets": {k: (ratios[k] is not None and ratios[k] >= v) for k, v in TARGETS.items()}}


def paired_ratios(server: dict, hf: dict, top: str) -> dict:
    """Each round's server rate over the same round's baseline rate, and their median: a second view of
    the headline ratios that the machine's drift between rounds cannot move."""
    level = server["levels"].get(top, {})
    server_rates = level.get("runs_in_order_output_tokens_per_s", [])
    paired = {}
    for name, key in (("server_vs_sequential", "sequential_generate"), ("server_vs_generate_batch", "generate_batch")):
        rates = hf.get(key, {}).get("runs_in_order_output_tokens_per_s")
        if not rates:  # the baseline did not run (--skip-hf)
            continue
        by_round = [round(s / b, 2) for s, b in zip(server_rates, rates, strict=True) if b]
        if by_round:
            paired[name] = {"median": sorted(by_round)[(len(by_round) - 1) // 2], "by_round": by_round}
    return paired


def print_table(result: dict) -> None:
    summary, server = result["summary"], result["server"]
    print(f"\nmodel {result['config']['model']}  |  {result['config']['num_prompts']} prompts x "
          f"{result['config']['prompt_tokens']} tokens -> {result['config']['output_tokens']} tokens, "
          f"{result['machine']['torch_threads']} threads", file=sys.stderr)
    print(f"{'method':<22}{'output tok/s':>13}{'TTFT p50 ms':>13}{'ITL p50 ms':>12}{'srv cores':>11}"
          "   all runs (tok/s)", file=sys.stderr)
    for name, tps in summary["output_tokens_per_s"].items():
        level = server["levels"].get(name.removeprefix("server_c")) if name.startswith("server_c") else None
        run = level or result["hf"][name]
        ttft = f"{level['ttft_ms']['p50']:.1f}" if level and level["ttft_ms"] else "-"
        itl = f"{level['itl_ms']['p50']:.1f}" if level and level["itl_ms"] else "-"
        cores = f"{level['server_cpu_s'] / level['duration_s']:.2f}" if level else "-"
        runs = ", ".join(f"{r:.0f}" for r in run.get("runs_output_tokens_per_s", [tps]))
        print(f"{name:<22}{tps:>13.1f}{ttft:>13}{itl:>12}{cores:>11}   {runs}", file=sys.stderr)
    ratios = next(v for k, v in summary.items() if k.startswith("ratios_at"))
    paired = next(v for k, v in summary.items() if k.startswith("paired_ratios_at"))
    for name, value in ratios.items():
        if value is None:
            continue
        target = TARGETS.get(name)
        line = f"{name:<30}{value}x" + (f"  (target >= {target}x)" if target else "")
        if name in paired:
            line += f"; round by round {paired[name]['by_round']} (median {paired[name]['median']}x)"
        print(line, file=sys.stderr)
    print(f"server startup {server['startup_s']} s, RSS {server['rss_mb_after_load']} MiB after load, "
          f"{server['rss_mb_after_runs']} MiB after the runs", file=sys.stderr)
    machine = result["machine"]
    other_share = machine["other_processes_cpu_s"] / max(machine["seconds"], 1e-9)
    print(f"run took {machine['seconds']} s; other processes used {machine['other_processes_cpu_s']} CPU-s "
          f"meanwhile ({other_share:.2f} cores on average)", file=sys.stderr)
    if other_share > 0.1:
        print("warning: other work shared the CPUs: rerun on an idle machine before trusting these numbers",
              file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.engine_bench",
        description="Compare `turnout serve` (HTTP, concurrency 1 and 32) with HF sequential generate, padded "
        "generate and transformers' generate_batch on one workload; print a table and write one JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=None, help="model directory; default: the bundled server/default_model")
    p.add_argument("--num-prompts", type=int, default=32, help="distinct prompts (= requests per run)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="tokens per prompt")
    p.add_argument("--output-tokens", type=int, default=64, help="greedy output tokens per request, EOS ignored")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32],
                   help="server concurrency levels; ratios use the last one")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the server and for HF")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype, everywhere")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="attention kernel")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="per-step token budget, for the server and for generate_batch")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds; each runs every method once (interleaved); the median run per method is "
                   "reported, all rates are kept")
    p.add_argument("--skip-hf", action="store_true", help="measure the server only")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    for name in ("num_prompts", "prompt_tokens", "output_tokens", "threads", "max_num_batched_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.concurrency) < 1:
        p.error(f"--concurrency levels must be >= 1, got {args.concurrency}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = resolve_model(args.model)
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # generate_batch warns on every persistent-manager call through its own logger, outside transformers'.
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine = machine_info(args.threads)
    others = OtherCpuMeter()
    others.start()
    # Timed prompts first, then distinct warm-up prompts.
    prompts = from_tokenizer(AutoTokenizer.from_pretrained(model_dir), args.num_prompts + max(args.concurrency),
                             args.prompt_tokens)
    server, hf = run_interleaved(args, model_dir, prompts)
    machine["other_processes_cpu_s"] = others.stop()
    config = {k: v for k, v in vars(args).items() if k not in ("out", "skip_hf")} | {"model": model_dir}
    machine["seconds"] = round(time.perf_counter() - started, 1)
    result = {"config": config, "machine": machine, "summary": summarize(server, hf, str(args.concurrency[-1])),
              "server": server, "hf": hf}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
