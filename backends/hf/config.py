"""Configuration of the Hugging Face engine. Every field is checked at start, quoting the bad value."""

from __future__ import annotations

import os
from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager")
BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed batch."""


@dataclass(frozen=True)
class HFEngineConfig:
    model: str
    """A local directory with a transformers causal LM (config.json, weights, tokenizer)."""
    served_model_name: str | None = None
    """The name clients put in `model`; defaults to the directory's name."""
    dtype: str = "float32"
    """Weights and activations dtype: float32, bfloat16 or float16 (the latter for GPUs)."""
    max_model_len: int | None = None
    """Longest prompt + output in tokens; defaults to the model's max_position_embeddings."""
    max_num_seqs: int = 64
    """Most sequences decoding at once; the KV cache reserves one max_model_len slot for each."""
    max_num_batched_tokens: int = 2048
    """Most tokens one step computes; longer prompts are prefilled in chunks."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: sdpa or eager."""
    num_threads: int | None = None
    """torch intra-op threads for the engine; None leaves torch's default."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:1, ..."""
    adapters: tuple[tuple[str, str], ...] = ()
    """LoRA adapters served next to the base model: (name, adapter directory) pairs (a {name: directory}
    mapping is accepted too). A request whose `model` is an adapter's name runs with that adapter, in the
    same batches as everyone else."""

    def __post_init__(self) -> None:
        if isinstance(self.adapters, dict):  # the config file's natural form
            object.__setattr__(self, "adapters", tuple(self.adapters.items()))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation must be one of {ATTENTION}, got {self.attn_implementation!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        names = [name for name, _ in self.adapters]
        for name, directory in self.adapters:
            if not name or name == BASE_ADAPTER or names.count(name) > 1:
                raise ValueError(f"adapter names must be unique, non-empty and not {BASE_ADAPTER!r}, got {name!r}")
            if not os.path.isfile(os.path.join(directory, "adapter_config.json")):
                raise ValueError(f"adapter {name!r}: {directory!r} is not a LoRA adapter directory "
                                 "(no adapter_config.json)")
