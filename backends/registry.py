"""Backend kinds by name: adding a backend is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from backends.base import Backend


def _hf(options: dict) -> Backend:
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig

    return HFBackend(HFEngineConfig(**options))


def _tgi(options: dict) -> Backend:
    from backends.tgi import TGIBackend, TGIBackendConfig

    return TGIBackend(TGIBackendConfig(**options))


BACKENDS: dict[str, Callable[[dict], Backend]] = {
    "hf": _hf,
    "tgi": _tgi,
}


def create_backend(kind: str, options: dict) -> Backend:
    try:
        factory = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(sorted(BACKENDS))}") from None
    return factory(options)
