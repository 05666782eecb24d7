"""One-command GPU check of the trtllm backend: load a model through TRTLLMBackend, stream a few
requests, print TTFT and output tok/s. Exit 0 when every check passed, 1 when one failed, 2 when this
machine cannot run it (no tensorrt_llm or no GPU).

    python -m bench.trtllm_check --model DIR [--requests 16 --max-tokens 64]

Checks: greedy is deterministic and stops at max_tokens with the right usage; n=2 sampling gives two
finished choices; a stop string taken from the greedy text cuts the text just before it; closing a
stream mid-way aborts it and the backend keeps serving; then a concurrent greedy load for the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from backends.trtllm import TensorRTLLMNotInstalled, TRTLLMBackend, TRTLLMConfig, tensorrt_llm_available
from backends.types import FinishReason, GenerateRequest, SamplingParams

PROMPT = "The history of the river begins"


class CheckFailed(Exception):
    pass


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


async def complete(backend, sampling: SamplingParams, prompt: str = PROMPT, request_id: str = "check") -> dict:
    """Run one request to the end; per choice: token ids, text, finish reason; plus usage and TTFT."""
    choices: dict[int, dict] = {}
    usage, ttft, start = None, None, time.perf_counter()
    async for delta in backend.generate(GenerateRequest(request_id, "check", sampling, prompt=prompt)):
        if ttft is None and delta.token_ids:
            ttft = time.perf_counter() - start
        choice = choices.setdefault(delta.index, {"ids": [], "text": "", "finish": None})
        choice["ids"] += delta.token_ids
        choice["text"] += delta.text
        choice["finish"] = delta.finish_reason or choice["finish"]
        usage = delta.usage or usage
    return {"choices": choices, "usage": usage, "ttft_s": ttft, "wall_s": time.perf_counter() - start}


async def check_greedy(backend, max_tokens: int) -> dict:
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    first, second = await complete(backend, greedy), await complete(backend, greedy)
    one = first["choices"][0]
    expect(one["ids"] == second["choices"][0]["ids"], "two greedy runs of one prompt differ")
    expect(len(one["ids"]) == max_tokens, f"greedy made {len(one['ids'])} tokens, asked for {max_tokens}")
    expect(one["finish"] == FinishReason.LENGTH, f"greedy finished with {one['finish']}, expected length")
    expect(first["usage"] is not None and first["usage"].completion_tokens == max_tokens,
           f"usage says {first['usage']}")
    return {"text": one["text"]}


async def check_sampled(backend, max_tokens: int) -> dict:
    result = await complete(backend, SamplingParams(max_tokens=max_tokens, temperature=0.8, top_p=0.95, n=2,
                                                    seed=7))
    expect(sorted(result["choices"]) == [0, 1], f"n=2 gave choices {sorted(result['choices'])}")
    expect(all(c["finish"] is not None and c["ids"] for c in result["choices"].values()),
           "a sampled choice did not finish or made no tokens")
    total = sum(len(c["ids"]) for c in result["choices"].values())
    expect(result["usage"].completion_tokens == total, f"usage {result['usage']} vs {total} tokens streamed")
    return {"texts": [c["text"] for c in result["choices"].values()]}


async def check_stop_string(backend, greedy_text: str, max_tokens: int) -> dict:
    middle = len(greedy_text) // 2
    stop = greedy_text[middle:middle + 3]
    expect(len(stop) == 3, f"greedy text too short to pick a stop string: {greedy_text!r}")
    expected = greedy_text[:greedy_text.find(stop)]
    result = await complete(backend, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                                                    stop=[stop]))
    choice = result["choices"][0]
    expect(choice["text"] == expected, f"stop {stop!r}: got {choice['text']!r}, expected {expected!r}")
    expect(choice["finish"] == FinishReason.STOP, f"stop string finished with {choice['finish']}")
    return {"stop": stop}


async def check_abort(backend) -> dict:
    stream = backend.generate(GenerateRequest("abort", "check", SamplingParams(max_tokens=512, temperature=0.0,
                                                                                ignore_eos=True), prompt=PROMPT))
    seen = 0
    async for delta in stream:
        seen += len(delta.token_ids)
        if seen >= 2:
            break
    await stream.aclose()
    expect(await backend.health(), "backend unhealthy after an aborted stream")
    after = await complete(backend, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    expect(len(after["choices"][0]["ids"]) == 4, "a request after the abort did not complete")
    return {"tokens_before_close": seen}


async def load(backend, requests: int, max_tokens: int) -> dict:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    results = await asyncio.gather(*(complete(backend, sampling, f"{PROMPT} ({i})", f"load-{i}")
                                     for i in range(requests)))
    wall = time.perf_counter() - start
    tokens = sum(r["usage"].completion_tokens for r in results)
    ttfts = sorted(r["ttft_s"] for r in results)
    return {"requests": requests, "output_tokens": tokens, "wall_s": round(wall, 3),
            "output_tokens_per_s": round(tokens / wall, 1), "ttft_ms_median": round(1000 * ttfts[len(ttfts) // 2], 1),
            "ttft_ms_max": round(1000 * ttfts[-1], 1)}


async def run(args) -> int:
    backend = TRTLLMBackend(TRTLLMConfig(model=args.model, max_num_seqs=max(args.requests, 2),
                                         kv_cache_free_gpu_memory_fraction=args.kv_cache_fraction))
    start = time.perf_counter()
    try:
        await backend.start()
    except TensorRTLLMNotInstalled as exc:
        print(f"trtllm_check: cannot run here: {exc}", file=sys.stderr)
        return 2
    report: dict = {"model": args.model, "startup_s": round(time.perf_counter() - start, 1), "checks": {}}
    failures = 0
    try:
        checks = [("greedy", lambda: check_greedy(backend, args.max_tokens)),
                  ("sampled_n2", lambda: check_sampled(backend, args.max_tokens)),
                  ("stop_string", lambda: check_stop_string(backend, report["checks"]["greedy"]["text"],
                                                            args.max_tokens)),
                  ("abort", lambda: check_abort(backend)),
                  ("load", lambda: load(backend, args.requests, args.max_tokens))]
        for name, check in checks:
            try:
                report["checks"][name] = {"ok": True, **await check()}
            except Exception as exc:  # report every check, and carry on with the next
                failures += 1
                report["checks"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await backend.close()
    print(json.dumps(report, indent=2))
    load_report = report["checks"].get("load", {})
    if load_report.get("ok"):
        print(f"trtllm_check: {load_report['output_tokens_per_s']} output tok/s, TTFT median "
              f"{load_report['ttft_ms_median']} ms ({args.requests} concurrent requests x {args.max_tokens} tokens)")
    print(f"trtllm_check: {'FAILED: ' + str(failures) + ' check(s)' if failures else 'all checks passed'}")
    return 1 if failures else 0


def gpu_missing() -> str | None:
    """Why this machine cannot run TensorRT-LLM, or None."""
    if not tensorrt_llm_available():
        return "tensorrt_llm is not installed (it needs an NVIDIA GPU and CUDA)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trtllm_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint or TensorRT engine directory")
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests in the load check")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--kv-cache-fraction", type=float, default=0.5,
                        help="share of free GPU memory the KV cache may take")
    args = parser.parse_args(argv)
    reason = gpu_missing()
    if reason:
        print(f"trtllm_check: cannot run here: {reason}. Run it on a CUDA machine after "
              "`pip install \"turnout[trtllm]\"` (see deploy/trtllm.md).", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
