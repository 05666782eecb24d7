"""The TensorRT-LLM backend. Importable anywhere; `start()` needs tensorrt_llm (an NVIDIA GPU)."""

from backends.trtllm.backend import TensorRTLLMNotInstalled, TRTLLMBackend, tensorrt_llm_available
from backends.trtllm.config import TRTLLMConfig

__all__ = ["TRTLLMBackend", "TRTLLMConfig", "TensorRTLLMNotInstalled", "tensorrt_llm_available"]
