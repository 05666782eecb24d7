"""Does the sampler become the bottleneck? One server, one workload, in one run: plain greedy against
sampling with filters, penalties and logprobs all on, at the same concurrency.

    python -m bench.sampling_bench --out bench/results/sampling.json
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.engine_bench import resolve_model
from bench.prompts import from_tokenizer
from bench.serve_bench import run_client, run_load
from bench.server_process import ServerProcess

MODES = {
    "greedy": {"temperature": 0.0},
    "sampling+penalties+logprobs": {
        "temperature": 0.8, "top_p": 0.9, "top_k": 50, "min_p": 0.02, "repetition_penalty": 1.1,
        "presence_penalty": 0.5, "frequency_penalty": 0.5, "logprobs": 5, "seed": 1,
    },
}


async def _measure(server: ServerProcess, prompts, args) -> dict:
    """One untimed pass of each mode first (allocations, caches), then alternating timed runs."""
    results: dict[str, list[float]] = {}
    for repeat in range(-1, args.repeats):
        for mode, body in MODES.items():
            run = await run_load(server.base_url, server.served_model_name, concurrency=args.concurrency,
                                 num_requests=len(prompts), output_tokens=args.output_tokens, prompts=prompts,
                                 stream=True, extra_body=body)
            if repeat >= 0:
                results.setdefault(mode, []).append(run["output_tokens_per_s"])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sampling_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory; default: the bundled model")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--num-prompts", type=int, default=32, help="distinct prompts (= requests per run)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="tokens per prompt")
    p.add_argument("--output-tokens", type=int, default=64, help="output tokens per request (EOS ignored)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the server")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per mode; medians are reported")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    from transformers import AutoTokenizer

    prompts = from_tokenizer(AutoTokenizer.from_pretrained(model), args.num_prompts, args.prompt_tokens)
    with ServerProcess(model, "bench", num_threads=args.threads, max_num_seqs=args.concurrency) as server:
        rates = run_client(_measure(server, prompts, args))
    medians = {mode: sorted(r)[len(r) // 2] for mode, r in rates.items()}
    ratio = medians["sampling+penalties+logprobs"] / medians["greedy"]
    # Runs alternate, so each round's pair ran side by side: their ratios show the spread that the
    # machine's drift leaves in the ratio of medians.
    by_round = [round(s / g, 3) for s, g in zip(rates["sampling+penalties+logprobs"], rates["greedy"], strict=True)]
    report = {"output_tokens_per_s": medians, "runs": rates, "ratio_vs_greedy": round(ratio, 3),
              "ratio_by_round": by_round,
              "target": 0.85, "modes": MODES, "concurrency": args.concurrency}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
