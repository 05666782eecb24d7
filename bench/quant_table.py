"""fp32 against int8 / nf4 / gptq artifacts of one model: held-out perplexity, weight size, decode speed.

Each method is made with `turnout tools quantize` (skipped when --reuse finds a finished artifact), then
loaded by the HF backend (backends/hf, what `turnout serve --model DIR` runs) for a fixed workload:
8 concurrent requests, 16-token prompts from the stdlib docs, 32 greedy output tokens each, EOS ignored,
2 torch threads, median of 5 batches. Perplexity is scored on the held-out split of the model's manifest.

    python -m bench.quant_table --work-dir /tmp/quant --out quant.json   # prints a markdown table too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path


async def decode_speed(model_dir: Path, num_requests: int, prompt_tokens: int, max_tokens: int, threads: int,
                       repeats: int) -> dict:
    """Output tokens per second of the HF backend for a batch of concurrent greedy requests (median of
    ``repeats`` batches: the machine is shared, so single runs are noisy)."""
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig
    from backends.types import GenerateRequest, SamplingParams
    from bench.prompts import from_tokenizer

    backend = HFBackend(
        HFEngineConfig(model=str(model_dir), num_threads=threads, max_num_seqs=num_requests, max_model_len=256)
    )
    await backend.start()
    lean_forward = backend.engine.core.runner.fast_forward is not None
    try:
        prompts = from_tokenizer(backend.tokenizer, num_requests, prompt_tokens)
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

        async def one(i: int, ids: list[int]) -> tuple[int, str]:
            request = GenerateRequest(f"q{i}", "bench", sampling, prompt_token_ids=ids)
            tokens, text = 0, ""
            async for delta in backend.generate(request):
                tokens += len(delta.token_ids)
                text += delta.text
            return tokens, text

        await one(-1, prompts[0].token_ids)  # warm-up
        rates, cpu_rates = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            results = await asyncio.gather(*(one(i, p.token_ids) for i, p in enumerate(prompts)))
            tokens = sum(t for t, _ in results)
            rates.append(tokens / (time.perf_counter() - start))
            # Tokens per CPU-second of this process: far less sensitive to other jobs on a shared machine.
            cpu_rates.append(tokens / (time.process_time() - cpu_start))
    finally:
        await backend.close()
    return {"output_tokens": sum(t for t, _ in results), "tok_per_s": round(statistics.median(rates), 1),
            "tok_per_s_runs": [round(r, 1) for r in rates],
            "tok_per_cpu_s": round(statistics.median(cpu_rates), 1), "sample": results[0][1][:60],
            "lean_forward": lean_forward}


def build_table(model: Path, work_dir: Path, methods: list[str], reuse: bool, speed_args: dict) -> list[dict]:
    from tools import derived
    from tools.quantize import QuantizeOptions, run_quantize

    rows = []
    for method in ["fp32", *methods]:
        if method == "fp32":
            artifact, ppl = model, None
        else:
            artifact = work_dir / method
            if not (reuse and (artifact / "manifest.json").is_file()):
                run_quantize(model, artifact, QuantizeOptions(method=method), "bench.quant_table", show_progress=False)
            metrics = derived.parent_manifest(artifact)["lineage"][-1]["metrics"]
            ppl = metrics["held_out_perplexity"]
        speed = asyncio.run(decode_speed(artifact, **speed_args))
        rows.append({"method": method, "dir": str(artifact), "held_out_perplexity": ppl,
                     "weight_bytes": derived.directory_bytes(artifact), **speed})
    base_ppl = derived.parent_manifest(model).get("evaluation", {}).get("held_out_perplexity")
    if base_ppl is None:
        base_ppl = derived.parent_manifest(work_dir / methods[0])["lineage"][-1]["metrics"]["parent_held_out_perplexity"]
    for row in rows:
        row["held_out_perplexity"] = row["held_out_perplexity"] or base_ppl
        row["perplexity_change_pct"] = round(100 * (row["held_out_perplexity"] / base_ppl - 1), 2)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| method | held-out ppl | change vs fp32 | weights on disk | decode tok/s | tok per CPU-s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['held_out_perplexity']:.3f} | {r['perplexity_change_pct']:+.2f}% | "
                     f"{r['weight_bytes'] / 1e6:.2f} MB | {r['tok_per_s']:.1f} | {r['tok_per_cpu_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="fp32 model directory (default: the bundled model)")
    parser.add_argument("--work-dir", type=Path, required=True, help="where the quantized artifacts are written")
    parser.add_argument("--methods", default="int8,nf4,gptq", help="comma-separated (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="reuse artifacts already in --work-dir")
    parser.add_argument("--requests", type=int, default=8, help="concurrent requests (default: %(default)s)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens each (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches; the median counts (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.model is None:
        from server.cli import default_model_dir

        args.model = Path(default_model_dir())
    speed_args = {"num_requests": args.requests, "prompt_tokens": args.prompt_tokens,
                  "max_tokens": args.max_tokens, "threads": args.threads, "repeats": args.repeats}
    rows = build_table(args.model, args.work_dir, args.methods.split(","), args.reuse, speed_args)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
