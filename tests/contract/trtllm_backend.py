"""The trtllm backend for the shared contract suite: built only where tensorrt_llm imports.

Wiring (the suite's parametrization): add `TRTLLM_PARAM` to the backend kinds, and build the backend
with `make_trtllm_backend(model_dir)` then `await backend.start()`; elsewhere the case shows as skipped
with `SKIP_REASON`. The bundled model (a tiny Llama) is a Hugging Face checkpoint, so TensorRT-LLM
serves it with its PyTorch runtime; the KV cache is kept small so the suite can share the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import Backend
from backends.trtllm import TRTLLMBackend, TRTLLMConfig, tensorrt_llm_available

SKIP_REASON = "tensorrt_llm not installed (needs an NVIDIA GPU)"
requires_tensorrt_llm = pytest.mark.skipif(not tensorrt_llm_available(), reason=SKIP_REASON)
TRTLLM_PARAM = pytest.param("trtllm", marks=requires_tensorrt_llm, id="trtllm")


def make_trtllm_backend(model_dir: str | Path, served_model_name: str | None = None) -> Backend:
    """Not started: the caller awaits `start()` (tens of seconds: TensorRT-LLM loads and warms up)."""
    if not tensorrt_llm_available():
        pytest.skip(SKIP_REASON)
    return TRTLLMBackend(TRTLLMConfig(
        model=str(model_dir),
        served_model_name=served_model_name,
        max_num_seqs=16,
        kv_cache_free_gpu_memory_fraction=0.2,
        guided_decoding_backend="xgrammar",  # the contract suite asks for response_format json
    ))
