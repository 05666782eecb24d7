"""Configuration of the TensorRT-LLM backend, and the `LLM(...)` keyword arguments it becomes.

Pure Python: nothing here imports tensorrt_llm, so it is checked (and unit-tested) on any machine.
The argument names are those of `tensorrt_llm.LLM` / `TorchLlmArgs` as documented in the TensorRT-LLM
1.3.0rc7 API reference (nvidia.github.io/TensorRT-LLM/1.3.0rc7/llm-api/reference.html): max_seq_len,
max_batch_size, max_num_tokens, tensor_parallel_size, dtype, tokenizer, guided_decoding_backend,
gather_generation_logits, kv_cache_config (KvCacheConfig.free_gpu_memory_fraction).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

RUNTIMES = ("auto", "pytorch", "tensorrt")
GUIDED_DECODING_BACKENDS = ("xgrammar", "llguidance")


@dataclass(frozen=True)
class TRTLLMConfig:
    model: str
    """A Hugging Face checkpoint directory (PyTorch runtime) or a built TensorRT engine directory."""
    served_model_name: str | None = None
    """The name clients put in `model`; defaults to the directory's name."""
    tokenizer: str | None = None
    """Tokenizer directory; needed for engine directories that hold no tokenizer files."""
    runtime: str = "auto"
    """auto (engine directory -> tensorrt, anything else -> pytorch), pytorch or tensorrt."""
    dtype: str = "auto"
    """Weights dtype passed to TensorRT-LLM (auto, float16, bfloat16, float32)."""
    max_model_len: int | None = None
    """Longest prompt + output in tokens (TensorRT-LLM max_seq_len); default: from the model."""
    max_num_seqs: int | None = None
    """Most requests scheduled at once (max_batch_size); default: TensorRT-LLM's."""
    max_num_tokens: int | None = None
    """Most tokens computed per step (max_num_tokens); default: TensorRT-LLM's."""
    tensor_parallel_size: int = 1
    """GPUs the model is split across."""
    kv_cache_free_gpu_memory_fraction: float | None = None
    """Share of free GPU memory the KV cache may take after weights (KvCacheConfig); default 0.9."""
    guided_decoding_backend: str | None = None
    """xgrammar or llguidance to serve response_format json_schema / json_object; None: refused."""
    gather_generation_logits: bool = False
    """Needed by the tensorrt runtime to return logprobs (the pytorch runtime does not need it)."""
    llm_kwargs: dict = field(default_factory=dict)
    """Any further `LLM(...)` keyword arguments, passed through as given."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_tokens is not None and self.max_num_tokens < 1:
            raise ValueError(f"max_num_tokens must be >= 1, got {self.max_num_tokens}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        fraction = self.kv_cache_free_gpu_memory_fraction
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise ValueError(f"kv_cache_free_gpu_memory_fraction must be in (0, 1], got {fraction}")
        if self.guided_decoding_backend not in (None, *GUIDED_DECODING_BACKENDS):
            raise ValueError(f"guided_decoding_backend must be one of {GUIDED_DECODING_BACKENDS} or None, "
                             f"got {self.guided_decoding_backend!r}")

    @property
    def name(self) -> str:
        return self.served_model_name or os.path.basename(os.path.normpath(self.model))


def is_engine_dir(path: str) -> bool:
    """A built TensorRT engine directory: `trtllm-build` writes rank*.engine files and a config.json
    with a `build_config` section."""
    if not os.path.isdir(path):
        return False
    if any(name.endswith(".engine") for name in os.listdir(path)):
        return True
    return "build_config" in _read_config(path)


def resolved_runtime(config: TRTLLMConfig) -> str:
    if config.runtime != "auto":
        return config.runtime
    return "tensorrt" if is_engine_dir(config.model) else "pytorch"


def llm_kwargs(config: TRTLLMConfig) -> dict:
    """Keyword arguments for `LLM(...)`, except kv_cache_config, which needs the KvCacheConfig class."""
    kwargs: dict = {"model": config.model, "dtype": config.dtype,
                    "tensor_parallel_size": config.tensor_parallel_size}
    optional = {
        "tokenizer": config.tokenizer,
        "max_seq_len": config.max_model_len,
        "max_batch_size": config.max_num_seqs,
        "max_num_tokens": config.max_num_tokens,
        "guided_decoding_backend": config.guided_decoding_backend,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    if config.gather_generation_logits:
        kwargs["gather_generation_logits"] = True
    kwargs.update(config.llm_kwargs)
    return kwargs


def model_max_len(model_dir: str) -> int | None:
    """The context length a model directory declares: an engine's build_config.max_seq_len, else the
    Hugging Face config's max_position_embeddings (or n_positions for GPT-2 style configs)."""
    config = _read_config(model_dir)
    build = config.get("build_config") or {}
    for value in (build.get("max_seq_len"), config.get("max_position_embeddings"), config.get("n_positions")):
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_vocab_size(model_dir: str) -> int | None:
    """The vocabulary size of the model's embedding (an engine keeps it under pretrained_config), which
    is the length TensorRT-LLM wants for embedding_bias; may exceed the tokenizer's."""
    config = _read_config(model_dir)
    value = (config.get("pretrained_config") or {}).get("vocab_size") or config.get("vocab_size")
    return value if isinstance(value, int) and value > 0 else None


def _read_config(model_dir: str) -> dict:
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
