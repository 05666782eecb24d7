"""Per-op times of the HF engine's CPU kernels: float32 vs bfloat16 on the kernels vs PyTorch's bfloat16 ops
(`ops.TorchOps`), and paged vs contiguous decode attention, at one decode step's shapes.

    python -m bench.kernel_bench                 # the 120M Llama: hidden 768, 12 heads of 64, MLP 2048, batch 32
    python -m bench.kernel_bench --heads 4 --hidden 256 --intermediate 1024   # the bundled model's shapes

Each number is the median over --runs of the mean of --reps calls, in microseconds. Decode attention cycles
through --layers separate caches (a decode step reads each layer's cache once, so one layer's cache is not
warm in L1/L2 when its turn comes); the contiguous layout is the slot cache's [slot, position, head, dim]
with views of the batch's rows, the paged one a pool of blocks at shuffled ids.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from backends.hf import cpu_kernels
from backends.hf.ops import KernelOps, TorchOps


def time_us(fn, reps: int, runs: int) -> float:
    fn()  # warm: first-call allocations, page faults
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - start) / reps * 1e6)
    return statistics.median(samples)


def time_pair_us(first, second, reps: int, runs: int) -> tuple[float, float]:
    """time_us of two functions with their runs interleaved, so that a slow spell on a shared machine falls on
    both alike."""
    first(), second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, times in zip((first, second), samples, strict=True):
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            times.append((time.perf_counter() - start) / reps * 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


def attention_inputs(args, dtype, gen):
    """Per layer: q, the contiguous views (k, v) and the paged pool (key_cache, value_cache, tables), with
    the same lengths."""
    batch, heads, head_dim, block = args.batch, args.heads, args.head_dim, args.block_size
    lengths = torch.randint(args.min_len, args.max_len + 1, (batch,), generator=gen)
    max_len = int(lengths.max())
    blocks_per_row = -(-args.max_len // block)
    layers = []
    for _ in range(args.layers):
        q = torch.randn(batch, heads, head_dim, generator=gen).to(dtype)
        # The slot cache: more slots than the batch and one spare position, as the runner allocates it.
        keys = torch.randn(batch + 4, args.max_len + 1, heads, head_dim, generator=gen).to(dtype)
        values = torch.randn_like(keys)
        k, v = keys[2 : 2 + batch, :max_len], values[2 : 2 + batch, :max_len]
        num_blocks = batch * blocks_per_row + 8
        ids = torch.randperm(num_blocks, generator=gen)[: batch * blocks_per_row].view(batch, blocks_per_row)
        key_cache = torch.empty(num_blocks, block, heads, head_dim, dtype=dtype)
        value_cache = torch.empty_like(key_cache)
        padded = blocks_per_row * block
        key_cache[ids.flatten()] = keys[2 : 2 + batch, :padded].reshape(-1, block, heads, head_dim)
        value_cache[ids.flatten()] = values[2 : 2 + batch, :padded].reshape(-1, block, heads, head_dim)
        layers.append((q, k, v, key_cache, value_cache, ids.int()))
    return lengths, layers


def measure(args, ops, dtype) -> dict[str, float]:
    """Each op's time (us) on `ops` with tensors of `dtype`, at the decode step's shapes."""
    batch, hidden, heads, head_dim = args.batch, args.hidden, args.heads, args.head_dim
    gen = torch.Generator().manual_seed(0)
    row: dict[str, float] = {}
    x = torch.randn(batch, 1, hidden, generator=gen).to(dtype)
    weight = torch.randn(hidden, generator=gen).to(dtype)
    hidden_state, delta = x.clone(), torch.randn_like(x) * 0.01
    gate_up = torch.randn(batch, 1, 2 * args.intermediate, generator=gen).to(dtype)
    qkv = torch.randn(batch, 1, 3 * heads, head_dim, generator=gen).to(dtype)
    angles = torch.randn(batch, 1, head_dim, generator=gen)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    slot_keys = torch.zeros(batch + 4, args.max_len + 1, heads, head_dim, dtype=dtype)
    slot_values = torch.zeros_like(slot_keys)
    slots = torch.arange(2, 2 + batch)
    positions = torch.randint(0, args.max_len, (batch, 1), generator=gen)
    row["rms_norm"] = time_us(lambda: ops.rms_norm(x, weight, 1e-6), args.reps, args.runs)
    row["add_rms_norm"] = time_us(lambda: ops.add_rms_norm(hidden_state, delta, weight, 1e-6), args.reps, args.runs)
    row["silu_mul"] = time_us(lambda: ops.silu_mul(gate_up), args.reps, args.runs)
    row["rope_and_cache_write"] = time_us(
        lambda: ops.rope_and_cache_write(qkv, cos, sin, slot_keys, slot_values, slots, positions, heads),
        args.reps, args.runs)
    lengths, layers = attention_inputs(args, dtype, gen)
    scale = head_dim**-0.5

    def contiguous():
        for q, k, v, _, _, _ in layers:
            ops.decode_attention(q, k, v, lengths, scale)

    def paged():
        for q, _, _, key_cache, value_cache, tables in layers:
            ops.paged_decode_attention(q, key_cache, value_cache, tables, lengths, scale)

    both = time_pair_us(contiguous, paged, max(1, args.reps // 5), args.runs)
    row["decode_attention (contiguous)"], row["paged_decode_attention"] = (t / args.layers for t in both)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--min-len", type=int, default=96)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine a second thread waits on a busy "
                             "core at every barrier, and the numbers swing 4x; 0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.head_dim = args.hidden // args.heads
    kernels = cpu_kernels.load()
    if kernels is None:
        print("the CPU kernels could not be built: nothing to measure")
        return 1
    implementations = [("kernels f32", KernelOps(kernels), torch.float32),
                       ("kernels bf16", KernelOps(kernels), torch.bfloat16),
                       ("torch bf16", TorchOps(), torch.bfloat16)]
    batch, hidden, heads, head_dim = args.batch, args.hidden, args.heads, args.head_dim
    print(f"batch {batch}, hidden {hidden}, {heads} heads x {head_dim}, intermediate {args.intermediate}, "
          f"lengths {args.min_len}-{args.max_len}, block size {args.block_size}, {torch.get_num_threads()} threads; "
          f"us per call, median of {args.runs} runs x {args.reps}")
    results: dict[str, dict[str, float]] = {}
    for name, ops, dtype in implementations:
        results[name] = measure(args, ops, dtype)
    names = list(results)
    ops_names = list(results[names[0]])
    width = max(len(op) for op in ops_names)
    print(f"{'op':<{width}}  " + "  ".join(f"{name:>13}" for name in names))
    for op in ops_names:
        print(f"{op:<{width}}  " + "  ".join(f"{results[name][op]:>13.1f}" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
