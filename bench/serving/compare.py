"""`turnout bench compare`: the same sweep against two servers on the same model, in one sitting.

The servers run one after the other, never at once (on a small machine two servers would share its cores
and measure each other). Round 1 runs A then B, round 2 B then A, and so on (`--rounds`), so the machine's
drift over minutes lands on both alike. Each turn starts the server, warms it up, runs every level on the
same prompts the other server gets, and stops it; each level has its own prompts, and each turn starts a
fresh process, so no prefix cache carries over between levels or turns.

The ratio table gives, per level, each server's median over the rounds and their ratio A/B (throughput:
higher is better for A; latency: lower is better for A), and the throughput ratio of each round's pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.serving import cli, options, plots, table
from bench.serving.event_loop import run_client
from bench.serving.load import LevelRun
from bench.serving.servers import parse_server
from bench.serving.sweep import Run, run_sweep
from bench.serving.target import Target
from bench.serving.tokenizers import LocalTokenizer
from bench.serving.workloads import build_sets

RATIO_METRICS = (("output_throughput", "out tok/s"), ("median_ttft_ms", "TTFT p50 ms"),
                 ("median_tpot_ms", "TPOT p50 ms"), ("median_itl_ms", "ITL p50 ms"), ("median_e2el_ms", "E2EL p50 ms"))

DESCRIPTION = """\
Start two servers one after the other on the same model (presets `turnout` and `vllm`, or any command
line), run the same `turnout bench` sweep against each in alternating rounds, in one sitting, and print
each server's numbers and the ratio table. This is how to check turnout's performance claims on your own
machine:

  turnout bench compare --server turnout --server vllm --concurrency 1 8 32 64 --num-prompts 128
  turnout bench compare --server turnout \\
      --server 'tuned=turnout serve --model {model_dir} --served-model-name {model} --port {port} --num-threads 1'

A command may use {port}, {model_dir}, {model}, {python} and {max_num_seqs}; it is ready when GET /v1/models
answers 200. Results go to --result-dir: compare.json (the ratio table and where every run's JSON is), a
folder per server and round with one JSON per level, and the plots with one line per server.
"""


@dataclass
class Merged:
    """One server's runs of one level over all rounds, as the plots and tables take them: every request of
    every round, and the median over the rounds of each number."""
    shape: object
    run: LevelRun
    metrics: dict


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=cli._Formatter)
    p.add_argument("--server", action="append", required=True, metavar="PRESET|NAME=COMMAND",
                   help="a server to compare (exactly two): turnout, vllm, or NAME=COMMAND; ratios are first/second")
    p.add_argument("--model-dir", default=None, metavar="DIR",
                   help="the model both servers load; default: turnout's bundled model")
    p.add_argument("--model", default=None,
                   help="the name both serve it under; default: turnout-tiny for the bundled model, else the "
                        "directory's name")
    p.add_argument("--rounds", type=int, default=2, help="turns per server, alternating which goes first")
    p.add_argument("--startup-timeout", type=float, default=300.0, metavar="S",
                   help="seconds a server may take to become ready")
    options.add_request_options(p)
    options.add_workload_options(p)
    options.add_load_options(p)
    options.add_output_options(p)
    p.set_defaults(warmup=16)
    return p


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merge(rounds: list[list[Run]]) -> list[Merged]:
    merged = []
    for level_runs in zip(*rounds, strict=True):
        numbers = {key: _median([r.metrics[key] for r in level_runs]) for key, value in level_runs[0].metrics.items()
                   if isinstance(value, int | float) or value is None}
        numbers["failures"] = {}
        for r in level_runs:
            for kind, count in r.metrics["failures"].items():
                numbers["failures"][kind] = numbers["failures"].get(kind, 0) + count
        numbers["failed"] = sum(r.metrics["failed"] for r in level_runs)
        numbers["short_outputs"] = sum(r.metrics["short_outputs"] for r in level_runs)
        results = [result for r in level_runs for result in r.run.results]
        merged.append(Merged(level_runs[0].shape, LevelRun(level_runs[0].shape, results, 0.0, 0.0), numbers))
    return merged


def ratio_rows(names: list[str], rounds: dict[str, list[list[Run]]]) -> list[dict]:
    a, b = names
    rows = []
    for index, shape in enumerate(r.shape for r in rounds[a][0]):
        row = {"level": shape.label}
        for key, _ in RATIO_METRICS:
            va = _median([runs[index].metrics[key] for runs in rounds[a]])
            vb = _median([runs[index].metrics[key] for runs in rounds[b]])
            row[key] = {a: va, b: vb, "ratio": (va / vb) if va is not None and vb else None}
        row["output_throughput_ratio_by_round"] = [
            ra[index].metrics["output_throughput"] / rb[index].metrics["output_throughput"]
            if rb[index].metrics["output_throughput"] else None
            for ra, rb in zip(rounds[a], rounds[b], strict=True)]
        row["failed"] = {name: sum(runs[index].metrics["failed"] for runs in rounds[name]) for name in names}
        rows.append(row)
    return rows


def ratio_table(names: list[str], rows: list[dict]) -> str:
    a, b = names
    head = f"{'level':<8}" + "".join(f"{title:>30}" for _, title in RATIO_METRICS) + f"{'failed':>10}"
    sub = f"{'':<8}" + f"{a[:8]:>10}{b[:8]:>10}{a[:4] + '/' + b[:4]:>10}" * len(RATIO_METRICS)
    lines = [head, sub, "-" * len(head)]
    for row in rows:
        cells = ""
        for key, _ in RATIO_METRICS:
            cell = row[key]
            cells += "".join("         -" if v is None else f"{v:>10.1f}" for v in (cell[a], cell[b]))
            cells += "         -" if cell["ratio"] is None else f"{cell['ratio']:>9.2f}x"
        failed = f"{row['failed'][a]}/{row['failed'][b]}"
        lines.append(f"{row['level']:<8}{cells}{failed:>10}")
        by_round = ", ".join("-" if r is None else f"{r:.2f}" for r in row["output_throughput_ratio_by_round"])
        lines.append(f"{'':<8}throughput ratio round by round: {by_round}")
    return "\n".join(lines)


async def _compare(args, specs, shapes, slos, headers, model_dir: str, model: str) -> int:
    tokenizer = LocalTokenizer(args.tokenizer or model_dir)
    per_level = cli.requests_per_level(args)
    sets = await build_sets(args, tokenizer, len(shapes) + (1 if args.warmup else 0), per_level)
    result_dir = Path(args.result_dir) if args.result_dir else cli.default_result_dir()
    names = [spec.name for spec in specs]
    max_num_seqs = max(64, *(shape.in_flight_limit or 0 for shape in shapes))
    rounds: dict[str, list[list[Run]]] = {name: [] for name in names}
    turns = []
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    for round_number in range(1, args.rounds + 1):
        for spec in specs if round_number % 2 else list(reversed(specs)):
            print(f"turnout bench compare: round {round_number}, starting {spec.name}", file=sys.stderr)
            server = spec.start(model_dir=model_dir, model=model, max_num_seqs=max_num_seqs,
                                ready_timeout_s=args.startup_timeout)
            turn = {"round": round_number, "server": spec.name, "command": server.args, "started": time.time()}
            with server:
                turn["ready"] = time.time()
                turn["startup_s"] = round(server.child.startup_s, 2)
                target = Target(server.base_url, model, args.endpoint, headers)
                runs = await run_sweep(target, shapes, sets[: len(shapes)], args, tokenizer=tokenizer,
                                       tokenizer_id=tokenizer.name, slos_ms=slos,
                                       workload=cli.workload_description(args), label=spec.name,
                                       result_dir=result_dir / spec.name / f"round{round_number}",
                                       warmup_samples=sets[-1] if args.warmup else None)
            turn["stopped"] = time.time()
            turn["results"] = [str(r.path) for r in runs]
            turns.append(turn)
            rounds[spec.name].append(runs)
    rows = ratio_rows(names, rounds)
    series = {name: merge(rounds[name]) for name in names}
    for name in names:
        print(f"\n{name} (medians of {args.rounds} rounds)")
        print(table.summary_table([(m.shape.label, m.metrics) for m in series[name]], args.percentiles))
    print(f"\n{names[0]} vs {names[1]}, ratio = {names[0]} / {names[1]}, medians of {args.rounds} rounds, "
          f"started {started_at}")
    print(ratio_table(names, rows))
    failed = sum(row["failed"][name] for row in rows for name in names)
    if failed:
        print(f"{failed} requests failed; see the JSON files for which and why")
    summary = {"started": started_at, "servers": names, "rounds": args.rounds, "turns": turns, "levels": rows,
               "workload": cli.workload_description(args), "model": model, "model_dir": model_dir}
    result_dir.mkdir(parents=True, exist_ok=True)
    (result_dir / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.plots:
        written = plots.write_all(series, result_dir, args.percentiles, slos)
        print(f"plots: {', '.join(str(p) for p in written)}")
    print(f"results: {result_dir}/")
    return 1 if failed else 0


def main(argv: list[str], prog: str = "turnout bench compare") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if len(args.server) != 2:
            raise ValueError(f"give --server exactly twice (got {len(args.server)})")
        specs = [parse_server(text) for text in args.server]
        if specs[0].name == specs[1].name:
            raise ValueError(f"the two servers need different names (both are {specs[0].name!r})")
        if args.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
        shapes, slos, headers = options.run_settings(args, os.environ)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    model_dir, model = _model(args)
    try:
        return run_client(_compare(args, specs, shapes, slos, headers, model_dir, model))
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


def _model(args) -> tuple[str, str]:
    from server.cli import DEFAULT_MODEL_NAME, default_model_dir

    if args.model_dir is None:
        return default_model_dir(), args.model or DEFAULT_MODEL_NAME
    return args.model_dir, args.model or Path(args.model_dir).resolve().name
