"""Plain Hugging Face generation on the benchmark workload: the baselines our server must beat.

Each baseline is a function that warms up (first calls pay for lazy initialisation, as our server's first
requests do) and returns one timed run over all prompts. The caller repeats runs and takes medians,
interleaving them with the server's runs: on a shared 2-core machine the speed of the same code drifts by
tens of percent over minutes, and only runs taken side by side compare fairly. Every baseline is made to
produce exactly `output_tokens` tokens per prompt, greedily, and the tokens it really produced are counted
and checked.

All their torch work runs on threads that end with it (`on_own_thread`): generate_batch computes on a
thread of its own, and a thread gets its own OpenMP team; while another team is alive (say, the main
thread's, left by an earlier `generate`), there are more OpenMP threads than CPUs and libgomp stops the
idle ones spinning, which made every op of generate_batch pay to wake them (see backends/hf/engine.py).
Our server gets one team per engine; the baselines get the same.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

Run = Callable[[], dict]
"""One timed run over all prompts: returns the run's result (tokens, seconds, tokens/s)."""


def on_own_thread(fn: Callable, *args):
    """fn(*args) on a new thread, which ends (and takes its OpenMP team with it) when fn returns."""
    threads = torch.get_num_threads()
    outcome: dict = {}

    def target() -> None:
        torch.set_num_threads(threads)
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="hf-baseline")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load_model(model_dir: str, dtype: str, attn_implementation: str):
    """The model exactly as our server loads it (same dtype, same attention kernel), in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype),
                                                 attn_implementation=attn_implementation)
    return model.eval()


def _result(tokens: int, expected: int, seconds: float, **extra) -> dict:
    return {"output_tokens": tokens, "expected_output_tokens": expected, "complete": tokens == expected,
            "seconds": round(seconds, 4), "output_tokens_per_s": round(tokens / seconds, 2), **extra}


def _generate_kwargs(model, output_tokens: int) -> dict:
    """Greedy, and min_new_tokens = max_new_tokens so EOS can never end a sequence early."""
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    return {"do_sample": False, "max_new_tokens": output_tokens, "min_new_tokens": output_tokens,
            "pad_token_id": pad}


@torch.inference_mode()
def sequential_generate(model, prompts: list[list[int]], output_tokens: int) -> Run:
    """One `model.generate` per request, one after another: what a naive server does."""
    kwargs = _generate_kwargs(model, output_tokens)
    model.generate(torch.tensor([prompts[0]]), **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})

    @torch.inference_mode()
    def run() -> dict:
        tokens = 0
        start = time.perf_counter()
        for prompt in prompts:
            out = model.generate(torch.tensor([prompt]),
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long), **kwargs)
            tokens += out.shape[1] - len(prompt)
        return _result(tokens, len(prompts) * output_tokens, time.perf_counter() - start)

    return run


@torch.inference_mode()
def padded_generate(model, prompts: list[list[int]], output_tokens: int) -> Run:
    """All requests in one left-padded `model.generate` batch: a static batch that knows every request up
    front, the best case for plain transformers (and no use to a server, whose requests come and go)."""
    kwargs = _generate_kwargs(model, output_tokens)
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), kwargs["pad_token_id"], dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    model.generate(input_ids[:2], attention_mask=mask[:2], **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})

    @torch.inference_mode()
    def run() -> dict:
        start = time.perf_counter()
        out = model.generate(input_ids, attention_mask=mask, **kwargs)
        seconds = time.perf_counter() - start
        return _result((out.shape[1] - width) * len(prompts), len(prompts) * output_tokens, seconds)

    return run


@contextmanager
def generate_batch(model, prompts: list[list[int]], output_tokens: int, max_batch_tokens: int) -> Iterator[Run]:
    """transformers' built-in continuous batching (`model.generate_batch`), run the fair way:

    - outside `torch.inference_mode()` (inside it, generate_batch returns no tokens);
    - with its KV cache sized for this workload: left to itself on CPU it sizes the cache from 90% of *host*
      RAM, which takes minutes to allocate and would be charged to its first call;
    - with a persistent manager, warmed up by one untimed call, so the timed call measures generation only
      (a context manager: the manager and its thread are torn down on exit);
    - EOS disabled (eos_token_id=-1) so every request generates exactly `output_tokens`.
    `max_batch_tokens` is the per-step token budget (set it to the server's --max-num-batched-tokens).
    """
    from transformers import ContinuousBatchingConfig, GenerationConfig

    page_size = 256
    pages_per_request = math.ceil((max(len(p) for p in prompts) + output_tokens) / page_size)
    cb_config = ContinuousBatchingConfig(page_size=page_size, num_blocks=2 * len(prompts) * pages_per_request,
                                         max_batch_tokens=max_batch_tokens)
    gen_config = GenerationConfig(max_new_tokens=output_tokens, do_sample=False, eos_token_id=-1,
                                  pad_token_id=_generate_kwargs(model, output_tokens)["pad_token_id"])

    def call() -> dict:
        return model.generate_batch(prompts, generation_config=gen_config, continuous_batching_config=cb_config,
                                    persistent_manager=True, max_new_tokens=output_tokens)

    def run() -> dict:
        start = time.perf_counter()
        results = call()
        seconds = time.perf_counter() - start
        tokens = sum(len(r.generated_tokens) for r in results.values() if r.error is None)
        errors = sorted({r.error for r in results.values() if r.error is not None})[:3]
        return _result(tokens, len(prompts) * output_tokens, seconds, errors=errors,
                       num_blocks=cb_config.num_blocks, max_batch_tokens=max_batch_tokens)

    try:
        call()
        yield run
    finally:
        model.destroy_cached_continuous_batching_manager()
