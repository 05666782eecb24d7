"""The `openai` backend: a remote OpenAI-compatible server (vLLM, trtllm-serve, SGLang, llama.cpp, another
turnout), over our own keep-alive HTTP/1.1 client."""

from backends.openai.backend import OpenAIUpstreamBackend
from backends.openai.config import OpenAIUpstreamConfig

__all__ = ["OpenAIUpstreamBackend", "OpenAIUpstreamConfig"]
