"""How many KV-cache blocks a memory budget buys, and what the budget is.

`--kv-cache-memory` takes bytes ("4GiB", "512MiB", "2e9", "1500000000") or a fraction of the memory
free when the engine starts ("0.3": 30%; on CUDA the device's free memory after the weights are loaded,
on CPU the system's available memory). Without it, the cache is sized for what the engine used to
reserve (max_num_seqs sequences of max_model_len tokens), but never more than a quarter of the free memory
(CPU) or 80% of it (CUDA): paged blocks are shared by whoever needs them, so a cache smaller than that
worst case serves the same traffic and preempts only when it really runs out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
_DEFAULT_CPU_FRACTION = 0.25
_DEFAULT_CUDA_FRACTION = 0.8


def parse_memory(text: str | int | float) -> tuple[str, float]:
    """("bytes", n) or ("fraction", f) from a --kv-cache-memory value; ValueError quoting it otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"kv_cache_memory must be bytes or a fraction, got {text!r}")
    if isinstance(text, int | float):
        number, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"kv_cache_memory must be bytes (such as 4GiB, 512MiB, 2e9) or a fraction of free "
                             f"memory (such as 0.3), got {text!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(number):  # "1e400" parses to inf, which counts no blocks
        raise ValueError(f"kv_cache_memory must be a finite size, got {text!r}")
    if unit == "" and 0 < number <= 1:
        return "fraction", number
    size = number * _UNITS[unit]
    if size < 1:
        raise ValueError(f"kv_cache_memory must be more than 0 bytes, got {text!r}")
    return "bytes", size


def kv_bytes_per_token(model_config, dtype: torch.dtype) -> int:
    """Key and value bytes one token takes in every layer."""
    heads = getattr(model_config, "num_attention_heads", None) or model_config.n_head
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    hidden = getattr(model_config, "hidden_size", None) or model_config.n_embd
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    layers = getattr(model_config, "num_hidden_layers", None) or model_config.n_layer
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def free_memory(device: torch.device) -> int:
    """Bytes free for the cache now: the device's free memory on CUDA, MemAvailable on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30  # no /proc: assume a modest machine


@dataclass(frozen=True)
class KVBudget:
    num_blocks: int
    block_size: int
    bytes_per_token: int
    how: str
    """Where the size came from, for the start-up line."""

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def num_bytes(self) -> int:
        return self.num_tokens * self.bytes_per_token

    def describe(self, max_model_len: int) -> str:
        return (f"KV cache: {self.num_blocks} blocks of {self.block_size} tokens = {self.num_tokens} tokens "
                f"({self.num_bytes / 2**20:.0f} MiB, {self.how}); {self.num_tokens / max_model_len:.1f} "
                f"sequences of max_model_len {max_model_len}")


def budget(spec: str | int | float | None, model_config, dtype: torch.dtype, device: torch.device,
           block_size: int, max_num_seqs: int, max_model_len: int) -> KVBudget:
    per_token = kv_bytes_per_token(model_config, dtype)
    per_block = per_token * block_size
    if spec is None:
        worst_case = max_num_seqs * max_model_len * per_token
        fraction = _DEFAULT_CUDA_FRACTION if device.type == "cuda" else _DEFAULT_CPU_FRACTION
        cap = fraction * free_memory(device)
        size = min(worst_case, cap)
        how = ("max_num_seqs x max_model_len" if size == worst_case
               else f"{fraction:.0%} of free memory, less than max_num_seqs x max_model_len")
    else:
        kind, value = parse_memory(spec)
        if kind == "fraction":
            size, how = value * free_memory(device), f"--kv-cache-memory {spec}: {value:.0%} of free memory"
        else:
            size, how = value, f"--kv-cache-memory {spec}"
    num_blocks = int(size // per_block)
    if num_blocks < 1:
        raise ValueError(f"the KV-cache memory ({size:.0f} bytes) holds not even one block of {block_size} "
                         f"tokens ({per_block} bytes); raise --kv-cache-memory")
    return KVBudget(num_blocks, block_size, per_token, how)
