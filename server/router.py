"""Model name -> backend. One backend per model for now; replicas, policies and fallback build on this."""

from __future__ import annotations

from backends.base import Backend
from backends.errors import ModelNotFound


class Router:
    def __init__(self, backends: dict[str, Backend], aliases: dict[str, str] | None = None):
        if not backends:
            raise ValueError("the router needs at least one backend")
        self.backends = backends
        self.aliases = aliases or {}

    @property
    def default_model(self) -> str:
        return next(iter(self.backends))

    def resolve(self, model: str | None) -> Backend:
        """The backend for `model`; None picks the default (only for endpoints where model is optional)."""
        name = self.default_model if model is None else self.aliases.get(model, model)
        backend = self.backends.get(name)
        if backend is None:
            raise ModelNotFound(
                f"The model `{model}` does not exist. Available models: {', '.join(self.backends)}",
                param="model",
            )
        return backend

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()

    async def ready(self) -> bool:
        for backend in self.backends.values():
            if not await backend.health():
                return False
        return True
