"""A base for gateway-logic test backends: nothing to start, stop or check."""

from __future__ import annotations

from backends.base import Backend


class InertBackend(Backend):
    """Starts and closes as a no-op and is always healthy; a subclass writes `info` and `generate`."""

    async def start(self) -> None:
        pass

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        pass
