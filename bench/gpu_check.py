"""The HF engine on a GPU, checked and measured in one short run (under 5 minutes on one GPU).

    python -m bench.gpu_check                 # on CUDA; exits 2 when there is none
    python -m bench.gpu_check --device cpu --small   # the same checks on the CPU, to try the script itself

On CUDA the engine runs the same code as on CPU (the paged KV cache, the block manager, the flat forward)
with PyTorch's ops: SDPA (its flash or memory-efficient kernels) for prompt chunks, and decode attention over
blocks gathered by their tables. Checks, in float32 on a random-weight Llama with the bundled tokenizer:
  1. greedy output of 32 concurrent requests (8 sharing a system prompt each) token for token equal to greedy
     decoding with transformers' own forward, with prefix caching on and off;
  2. the same under forced preemption (a KV cache that holds a third of the work);
  3. prefix-cache hits counted.
Then throughput in bfloat16: 256 requests of 128 prompt + 128 output tokens added at once, output tok/s,
and a 32 x 512 prefill step's time. Prints one JSON report; exit 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch


def _model(out: Path, small: bool, dtype: str) -> Path:
    from bench.llama_120m import make

    path = make(out, dtype=dtype, max_position_embeddings=2048)
    if small:  # the CPU trial: a few layers of the same width
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig.from_pretrained(path)
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 256, 512
        config.num_attention_heads = config.num_key_value_heads = 4
        LlamaForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(path)
    # Spread logits (as the tests' random models do), so greedy decoding has no near-ties to flip.
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2 if small else 0.05)
    model.save_pretrained(path)
    return path


def _core(path: Path, device: str, dtype: str, prefix_caching: bool, kv_cache_memory=None, max_num_seqs=32):
    from backends.hf.config import HFEngineConfig
    from backends.hf.engine_setup import build_core

    config = HFEngineConfig(model=str(path), device=device, dtype=dtype, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max(2048, max_num_seqs), kv_cache_memory=kv_cache_memory,
                            enable_prefix_caching=prefix_caching)
    return build_core(config)


def _run(core, prompts, max_tokens):
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0)
    for i, p in enumerate(prompts):
        core.add([Sequence(str(i), list(p), params)])
    tokens: dict[str, list[int]] = {}
    while core.has_work():
        for out in core.step():
            tokens.setdefault(out.seq.request_id, []).extend(out.delta.token_ids)
        if core.take_failures():
            raise RuntimeError("a request failed in the engine")
    return [tokens[str(i)] for i in range(len(prompts))]


def _reference(path: Path, device: str, prompts, max_tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = list(p)
            for _ in range(max_tokens):
                ids.append(int(model(torch.tensor([ids], device=device)).logits[0, -1].argmax()))
            out.append(ids[len(p):])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a 2-layer model and a small load (CPU trials)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    report: dict = {"device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(args.device)
    failures = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = _model(Path(tmp) / "f32", args.small, "float32")
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(path).vocab_size
        g = torch.Generator().manual_seed(3)
        systems = [torch.randint(3, vocab, (64,), generator=g).tolist() for _ in range(4)]
        prompts = [systems[i % 4] + torch.randint(3, vocab, (1 + i % 13,), generator=g).tolist() for i in range(32)]
        max_tokens = 16
        expected = _reference(path, args.device, prompts, max_tokens)
        per_token = None
        for name, caching, third in (("prefix caching on", True, False), ("prefix caching off", False, False),
                                     ("preemption, caching on", True, True), ("preemption, caching off", False, True)):
            memory = None
            if third:
                blocks = sum(math.ceil((len(p) + max_tokens) / 16) for p in prompts) // 3
                memory = blocks * 16 * per_token
            built = _core(path, args.device, "float32", caching, memory)
            per_token = built.kv_budget.bytes_per_token
            got = _run(built.core, prompts, max_tokens)
            scheduler = built.core.scheduler
            equal = got == expected
            report[name] = {"greedy_equal": equal, "mismatched_requests": sum(a != b for a, b in zip(got, expected, strict=True)),
                            "preemptions": scheduler.num_preemptions, "prefix_cache_hits": scheduler.blocks.stats.hits}
            if not equal or (third and scheduler.num_preemptions == 0) or (caching and scheduler.blocks.stats.hits == 0):
                failures.append(name)
            del built
        report["checks_s"] = round(time.perf_counter() - started, 1)

        path = _model(Path(tmp) / "bf16", args.small, "bfloat16")
        requests, prompt_len, output_len = (32, 32, 16) if args.small else (256, 128, 128)
        built = _core(path, args.device, "bfloat16", False, max_num_seqs=requests)
        work = torch.randint(3, vocab, (requests, prompt_len), generator=g).tolist()
        _run(built.core, work[:4], 4)  # warm-up
        _sync(args.device)
        start = time.perf_counter()
        outputs = _run(built.core, work, output_len)
        _sync(args.device)
        elapsed = time.perf_counter() - start
        report["throughput_bf16"] = {"requests": requests, "prompt_tokens": prompt_len, "output_tokens": output_len,
                                     "seconds": round(elapsed, 2),
                                     "output_tok_per_s": round(sum(map(len, outputs)) / elapsed)}
        batch, length = (8, 64) if args.small else (32, 512)
        prefill = torch.randint(3, vocab, (batch, length), generator=g).tolist()
        times = []
        for _ in range(3):
            from backends.hf.sequence import Sequence
            from backends.types import SamplingParams

            for i, p in enumerate(prefill):
                built.core.add([Sequence(f"p{i}", p, SamplingParams(max_tokens=1, temperature=0))])
            _sync(args.device)
            start = time.perf_counter()
            while built.core.has_work():
                built.core.step()
            _sync(args.device)
            times.append(time.perf_counter() - start)
            prefill = [[t + 1 for t in p] for p in prefill]  # fresh prompts: nothing from the prefix cache
        report["prefill_bf16"] = {"batch": batch, "prompt_tokens": length, "seconds_median": round(sorted(times)[1], 3)}
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["failed_checks"] = failures
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    raise SystemExit(main())
