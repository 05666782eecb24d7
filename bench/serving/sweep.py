"""A sweep: every load level against one server, each on its own prompts, each written to its own JSON.

Warm-up requests (if any) go first, at the first level's concurrency, on prompts no timed level uses. After
each level, requests whose server sent no `usage` get their tokens counted with the tokenizer (off the timed
path), and the level's metrics are computed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.serving import metrics as run_metrics
from bench.serving import result_file
from bench.serving.load import LevelRun, run_level
from bench.serving.load_shapes import LoadShape
from bench.serving.request import build_payload
from bench.serving.target import Target
from bench.serving.workloads import Sample


@dataclass
class Run:
    run: LevelRun
    metrics: dict
    result: dict
    path: Path | None

    @property
    def shape(self) -> LoadShape:
        return self.run.shape


def payloads(target: Target, samples: list[Sample], args) -> list[dict]:
    return [build_payload(target.endpoint, target.model, s.prompt(args.token_ids), s.output_len,
                          stream=args.stream, temperature=args.temperature, ignore_eos=args.ignore_eos,
                          extra_body=args.extra_body) for s in samples]


async def fill_counts(run: LevelRun, samples: list[Sample], tokenizer) -> None:
    """Prompt tokens from the workload and output tokens from the tokenizer where `usage` was missing."""
    for result, sample in zip(run.results, samples, strict=True):
        if not result.prompt_tokens:
            result.prompt_tokens = sample.prompt_len
        if result.ok and result.output_tokens is None:
            result.output_tokens = len(await tokenizer.encode(result.text)) if result.text else 0


async def warm_up(target: Target, samples: list[Sample], count: int, shape: LoadShape, args) -> None:
    if count <= 0:
        return
    chosen = [samples[i % len(samples)] for i in range(count)]
    concurrency = shape.in_flight_limit or count
    await run_level(target.url, target.endpoint, payloads(target, chosen, args), LoadShape(concurrency=concurrency),
                    headers=target.headers, timeout_s=args.timeout, progress=False)


async def run_sweep(target: Target, shapes: list[LoadShape], sample_sets: list[list[Sample]], args, *,
                    tokenizer, tokenizer_id: str, slos_ms: dict, workload: dict, label: str,
                    result_dir: Path | None, warmup_samples: list[Sample] | None = None) -> list[Run]:
    """Run every level in order; `sample_sets[i]` is level i's prompts."""
    if warmup_samples:
        await warm_up(target, warmup_samples, args.warmup, shapes[0], args)
    runs = []
    for shape, samples in zip(shapes, sample_sets, strict=False):
        level = await run_level(target.url, target.endpoint, payloads(target, samples, args), shape,
                                headers=target.headers, timeout_s=args.timeout, seed=args.seed,
                                progress=args.progress)
        await fill_counts(level, samples, tokenizer)
        computed = run_metrics.compute(level.results, level.duration_s, args.percentiles, slos_ms)
        result = result_file.record(target=target, run=level, metrics=computed, args=args, label=label,
                                    tokenizer_id=tokenizer_id, workload=workload, slos_ms=slos_ms)
        path = result_file.write(result, result_dir, f"{label}-{shape.label}") if result_dir else None
        runs.append(Run(level, computed, result, path))
        print(f"turnout bench: {label} {shape.label}: {computed['completed']}/{len(samples)} completed, "
              f"{computed['output_throughput']:.1f} output tok/s", file=sys.stderr)
    return runs
