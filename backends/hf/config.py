"""Configuration of the Hugging Face engine. Every field is checked at start, quoting the bad value."""

from __future__ import annotations

import os
from dataclasses import dataclass

from backends.hf.kv_budget import parse_memory

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
    """Most sequences decoding at once."""
    kv_cache_memory: str | int | float | None = None
    """The KV cache's memory: bytes ("4GiB", "512MiB", 2e9) or a fraction of the free memory (0.3); None:
    enough for max_num_seqs x max_model_len tokens, capped at a quarter of free memory (CPU) or 80% (CUDA).
    See backends/hf/kv_budget.py."""
    block_size: int = 16
    """Token positions per KV-cache block (the unit of allocation and of prefix caching)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of earlier requests that began with the same tokens (exact: computed keys and
    values depend only on the tokens before them, and on the LoRA adapter, which is part of the key)."""
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
    embedding_pooling: str | None = None
    """How POST /v1/embeddings pools the final hidden states: `mean` over the input's tokens or the `last`
    token's; None: what the model directory's sentence-transformers config (1_Pooling/config.json) says,
    else `mean` (backends/hf/embedding.py says why)."""
    grammar_max_schema_bytes: int = 32 * 1024
    """Largest `response_format` JSON schema compiled, in bytes of its compact JSON; a bigger one is a 400.
    Compile cost grows faster than the schema (600 optional string properties, 20 KB: seconds)."""
    grammar_max_schema_depth: int = 64
    """Deepest nesting of objects and arrays in a schema document (ten levels of nested objects are ~21)."""
    grammar_compile_timeout_s: float = 10.0
    """Most CPU time a schema's trial compile may take (in its compiler process; CPU time, so a busy machine
    does not turn a good schema into a 400); past it the trial is killed and the request gets a 400. A trial
    that has not finished after 3x this in wall time is killed too, as Overloaded (503)."""
    grammar_compile_memory_mb: int = 1024
    """Most resident memory a compiler process may reach (its ~0.5 GB of Python, torch and xgrammar
    included); past it the trial is killed and the request gets a 400."""
    grammar_max_compiled_mb: int = 64
    """Largest compiled grammar accepted, in MiB of memory (xgrammar's estimate); a bigger one is a 400."""
    grammar_compile_workers: int = 2
    """Compiler processes, and so distinct schemas compiling at once (each holds ~0.5 GB, started at the
    first response_format request, replaced when killed)."""
    grammar_compile_threads: int = 1
    """xgrammar threads per compile."""
    grammar_compile_queue: int = 8
    """Most distinct schemas waiting for a free compiler process; one more gets a 503 (Overloaded)."""
    grammar_cache_mb: int = 256
    """Memory (xgrammar's estimate) the compiled grammars cached by schema may hold; least recently used
    ones go first."""

    def __post_init__(self) -> None:
        if isinstance(self.adapters, dict):  # the config file's natural form
            object.__setattr__(self, "adapters", tuple(self.adapters.items()))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation must be one of {ATTENTION}, got {self.attn_implementation!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.embedding_pooling not in (None, "mean", "last"):
            raise ValueError(f"embedding_pooling must be 'mean' or 'last', got {self.embedding_pooling!r}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.kv_cache_memory is not None:
            parse_memory(self.kv_cache_memory)
        if not isinstance(self.block_size, int) or isinstance(self.block_size, bool) or not 1 <= self.block_size <= 1024:
            raise ValueError(f"block_size must be an integer in 1..1024, got {self.block_size!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        for name, low in (("grammar_max_schema_bytes", 2), ("grammar_max_schema_depth", 1),
                          ("grammar_compile_memory_mb", 1), ("grammar_max_compiled_mb", 1),
                          ("grammar_compile_workers", 1), ("grammar_compile_threads", 1),
                          ("grammar_compile_queue", 0), ("grammar_cache_mb", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        timeout = self.grammar_compile_timeout_s
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"grammar_compile_timeout_s must be a number of seconds > 0, got {timeout!r}")
        names = [name for name, _ in self.adapters]
        for name, directory in self.adapters:
            if not name or name == BASE_ADAPTER or names.count(name) > 1:
                raise ValueError(f"adapter names must be unique, non-empty and not {BASE_ADAPTER!r}, got {name!r}")
            if not os.path.isfile(os.path.join(directory, "adapter_config.json")):
                raise ValueError(f"adapter {name!r}: {directory!r} is not a LoRA adapter directory "
                                 "(no adapter_config.json)")
