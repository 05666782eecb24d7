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
        # Adapter name -> the name of the backend that serves it (the adapter's base model).
        self.adapters = {info.name: name for name, backend in backends.items() for info in backend.adapters}

    @property
    def default_model(self) -> str:
        return next(iter(self.backends))

    def resolve(self, model: str | None) -> Backend:
        """The backend for `model`; None picks the default (only for endpoints where model is optional)."""
        return self.route(model)[0]

    def route(self, model: str | None) -> tuple[Backend, str | None]:
        """(backend, adapter) for `model`: an adapter's name routes to its base model's backend."""
        name = self.default_model if model is None else self.aliases.get(model, model)
        backend = self.backends.get(name)
        if backend is not None:
            return backend, None
        if name in self.adapters:
            return self.backends[self.adapters[name]], name
        raise ModelNotFound(
            f"The model `{model}` does not exist. Available models: {', '.join([*self.backends, *self.adapters])}",
            param="model",
        )

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
