"""How fast the HF engine prefills, against what the machine's matrix multiply can do.

Builds the engine core as the server does, then times the step that prefills a batch of prompts (32 x 64
tokens by default, all in one step) over several rounds, each on fresh prompts (so the prefix cache has
nothing to give), and reports the median step time, prompt tokens/s and the achieved GFLOP/s (the
projections' and LM head's 2 x parameters x tokens plus attention's 4 x layers x hidden x sum of
query-key pairs) beside the peak GFLOP/s of one large `torch.mm` in the same dtype and threads.

    python -m bench.prefill_bench --model /tmp/llama-120m --dtype float32
    python -m bench.prefill_bench --model /tmp/llama-120m-bf16 --dtype bfloat16 --profile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.profile_engine import build_core, make_sequences


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def prefill_flops(config, batch: int, prompt_tokens: int) -> float:
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_layer = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * config.intermediate_size
    tokens = batch * prompt_tokens
    projections = 2 * tokens * (layers * per_layer + hidden * config.vocab_size / prompt_tokens)  # LM head: last token only
    pairs = batch * prompt_tokens * (prompt_tokens + 1) / 2
    attention = 4 * layers * heads * head_dim * pairs
    return projections + attention


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="print torch.profiler's table of one prefill step")
    args = p.parse_args(argv)

    core, _ = build_core(args.model, args.batch, args.dtype, "sdpa", args.threads,
                         max_num_batched_tokens=max(2048, args.batch * args.prompt_tokens))
    config = core.runner.model.config
    vocab = config.vocab_size
    generator = torch.Generator().manual_seed(0)
    times = []
    for round_index in range(args.rounds + 1):  # the first round warms oneDNN's kernels up
        prompts = torch.randint(3, vocab, (args.batch, args.prompt_tokens), generator=generator).tolist()
        for seqs in make_sequences(prompts, 1, f"r{round_index}"):
            core.add(seqs)
        profiler = None
        if args.profile and round_index == args.rounds:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        start = time.perf_counter()
        outputs = core.step()
        elapsed = time.perf_counter() - start
        if profiler is not None:
            profiler.__exit__(None, None, None)
        assert len(outputs) == args.batch, "the whole batch must prefill in one step"
        while core.has_work():
            core.step()
        if round_index:
            times.append(elapsed)
    step = statistics.median(times)
    flops = prefill_flops(config, args.batch, args.prompt_tokens)
    dtype = getattr(torch, args.dtype)
    peak = matmul_peak_gflops(dtype)
    report = {"model": args.model, "dtype": args.dtype, "batch": args.batch, "prompt_tokens": args.prompt_tokens,
              "threads": args.threads, "prefill_step_ms_median": round(step * 1e3, 1),
              "prefill_step_ms_all": [round(t * 1e3, 1) for t in times],
              "prompt_tokens_per_s": round(args.batch * args.prompt_tokens / step),
              "achieved_gflops": round(flops / step / 1e9, 1), "matmul_peak_gflops": round(peak, 1),
              "fraction_of_peak": round(flops / step / 1e9 / peak, 2)}
    print(json.dumps(report, indent=2))
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
