"""Backend kinds by name: adding a backend is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from backends.base import Backend


def _hf(options: dict) -> Backend:
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig

    return HFBackend(HFEngineConfig(**options))


def _vllm(options: dict) -> Backend:
    from backends.vllm import VLLMBackend, VLLMConfig

    return VLLMBackend(VLLMConfig(**options))


def _openai(options: dict) -> Backend:
    from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig

    return OpenAIUpstreamBackend(OpenAIUpstreamConfig(**options))


def _trtllm(options: dict) -> Backend:
    from backends.trtllm import TRTLLMBackend, TRTLLMConfig

    return TRTLLMBackend(TRTLLMConfig(**options))


def _tgi(options: dict) -> Backend:
    from backends.tgi import TGIBackend, TGIBackendConfig

    return TGIBackend(TGIBackendConfig(**options))


BACKENDS: dict[str, Callable[[dict], Backend]] = {
    "hf": _hf,
    "vllm": _vllm,
    "openai": _openai,
    "trtllm": _trtllm,
    "tgi": _tgi,
}


def create_backend(kind: str, options: dict) -> Backend:
    try:
        factory = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(sorted(BACKENDS))}") from None
    try:
        return factory(options)
    except TypeError as exc:  # an unknown option name: say which backend and what it takes
        raise ValueError(f"backend {kind!r}: {exc}") from None
