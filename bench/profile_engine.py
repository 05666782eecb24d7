"""Where an engine step's time goes: the benchmark workload run in-process on the HF engine, no HTTP.

Builds the engine core the way `HFBackend.start` does, adds every request at once (as concurrency N
does), steps until all finish, and reports (1) wall time per phase of `step()` (schedule, model forward,
sample, postprocess: detokenize and bookkeeping), (2) the decode-step time at full batch, and (3) the top
functions by own time under cProfile. The step loop runs on this thread, so cProfile sees all of it.

    python -m bench.profile_engine --model MODEL_DIR --batch 32
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict

from bench.sampling_bench import MODES as SAMPLING_MODES


class PhaseTimer:
    """Wraps methods of live objects so each call's wall time is added to a named phase."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _timed(self, inner, phase: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self.calls[phase] += 1

        return timed

    def wrap(self, obj, method: str, phase: str) -> None:
        setattr(obj, method, self._timed(getattr(obj, method), phase))

    def wrap_callable(self, obj, attribute: str, phase: str) -> None:
        """Time calls of a callable object held in `obj.attribute` (its other attributes pass through)."""
        inner = getattr(obj, attribute)
        timed = self._timed(inner, phase)

        class Timed:
            def __call__(self, *args, **kwargs):
                return timed(*args, **kwargs)

            def __getattr__(self, name):
                return getattr(inner, name)

        setattr(obj, attribute, Timed())


def build_core(model_dir: str, max_num_seqs: int, dtype: str, attn: str, threads: int, **options):
    """The engine core exactly as `HFBackend.start` builds it (backends/hf/engine_setup.py); `options`: more
    HFEngineConfig fields (kv_cache_memory, enable_prefix_caching, ...)."""
    from backends.hf.config import HFEngineConfig
    from backends.hf.engine_setup import build_core as build

    config = HFEngineConfig(model=model_dir, max_num_seqs=max_num_seqs, dtype=dtype, attn_implementation=attn,
                            num_threads=threads, **options)
    built = build(config)
    return built.core, built.loaded.tokenizer


def make_sequences(prompts: list[list[int]], output_tokens: int, tag: str, sampling: dict | None = None):
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    params = SamplingParams(max_tokens=output_tokens, ignore_eos=True, **(sampling or {"temperature": 0.0}))
    return [[Sequence(f"{tag}-{i}", list(p), params)] for i, p in enumerate(prompts)]


def run_all(core, requests) -> tuple[float, list[float], int]:
    """Add all requests, step to completion; return wall seconds, per-step seconds, tokens produced."""
    for seqs in requests:
        core.add(seqs)
    steps, tokens = [], 0
    start = time.perf_counter()
    while core.has_work():
        t = time.perf_counter()
        tokens += len(core.step())
        steps.append(time.perf_counter() - t)
    return time.perf_counter() - start, steps, tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_engine", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--batch", type=int, default=32, help="requests added at once (= concurrency)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--top", type=int, default=25, help="functions to list from cProfile")
    p.add_argument("--mode", default="greedy", choices=sorted(SAMPLING_MODES),
                   help="decoding parameters of every request (the sampling benchmark's two modes)")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")

    from bench.prompts import from_tokenizer

    core, tokenizer = build_core(args.model, args.batch, args.dtype, args.attn_implementation, args.threads)
    prompts = [q.token_ids for q in from_tokenizer(tokenizer, 2 * args.batch, args.prompt_tokens)]
    sampling = SAMPLING_MODES[args.mode]
    run_all(core, make_sequences(prompts[args.batch:], args.output_tokens, "warmup", sampling))

    timer = PhaseTimer()
    timer.wrap(core.scheduler, "schedule", "schedule")
    timer.wrap(core.runner, "execute", "forward (runner.execute)")
    import backends.hf.core as core_module

    timer.wrap_callable(core, "sampler", "sample")
    timer.wrap(core_module, "sampled_logprobs", "logprobs")
    timer.wrap(core, "_postprocess", "postprocess (detokenize, finish)")
    wall, steps, tokens = run_all(core, make_sequences(prompts[: args.batch], args.output_tokens, "timed", sampling))
    decode_steps = sorted(steps[1:-1]) or steps
    print(f"batch {args.batch}: {tokens} tokens in {wall:.3f} s = {tokens / wall:.1f} tok/s over {len(steps)} steps; "
          f"median step {1000 * decode_steps[len(decode_steps) // 2]:.2f} ms")
    for phase, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {phase:<34}{seconds:8.3f} s  {100 * seconds / wall:5.1f}%  ({timer.calls[phase]} calls)")

    profiler = cProfile.Profile()
    profiler.enable()
    run_all(core, make_sequences(prompts[: args.batch], args.output_tokens, "profiled", sampling))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
