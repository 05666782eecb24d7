"""The backend contract: everything the router needs from an engine, and nothing more.

Lifecycle::

    backend = HFBackend(config)      # cheap: no model loaded yet
    await backend.start()            # load weights, start the step loop; raises if it cannot
    async for delta in backend.generate(request):   # one request; closing the iterator aborts it
        ...
    await backend.health()           # True while the engine can take requests
    await backend.close()            # stop taking requests, free the model

`generate` raises `errors.InvalidRequest` (or a subclass) for input the engine cannot take (prompt too
long, unknown adapter) *before* yielding anything; any exception after the first delta means the
request failed midway.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Protocol

from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import InvalidRequest
from backends.tokenizing import Tokenizing
from backends.types import BackendStats, GenerateRequest, ModelInfo, OutputDelta, ToolSupport


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that front ends use (tokenize, chat templates)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


class Backend(abc.ABC):
    """One engine serving one model. See the module docstring for the lifecycle."""

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """Name and context length of the served model."""

    @property
    def adapters(self) -> list[ModelInfo]:
        """Adapters served on top of this model (their `parent` is this model's name). A request names
        one in `model`; the router sends it here with `GenerateRequest.adapter` set."""
        return []

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer when it is local; None for remote backends."""
        return None

    @property
    def tokenizing(self) -> Tokenizing | None:
        """The local tokenizer's size-bounded calls that run off the event loop (encoding prompts, rendering
        chat templates); None for remote backends. Front ends use it for anything that may be big."""
        return None

    @property
    def tool_support(self) -> ToolSupport:
        """Whether and how chat requests with `tools` are served (see ToolSupport); by default they are not."""
        return ToolSupport.NONE

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and begin accepting requests."""

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        """Stream the request's output deltas; closing the iterator early aborts the request."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """One vector per input (POST /v1/embeddings). Raises InvalidRequest (or a subclass) for input it
        cannot take. By default a backend serves no embeddings, and says so with a 400."""
        raise InvalidRequest(f"the model `{self.info.name}` does not serve embeddings (POST /v1/embeddings): "
                             f"its backend ({type(self).__name__}) has none", param="model")

    @abc.abstractmethod
    async def health(self) -> bool:
        """True while the backend can accept requests."""

    @property
    def dead(self) -> bool:
        """True once the backend can never serve again without restarting this process (an in-process
        engine whose step loop crashed). `health()` may go false and come back (a remote server that
        restarts); `dead` does not, so the server's liveness check (GET /health) fails on it and an
        orchestrator restarts the process."""
        return False

    def stats(self) -> BackendStats | None:
        """Engine numbers for metrics (running, waiting, KV usage, queue times); None when unknown.
        Cheap and non-blocking: it is called on the event loop at every metrics scrape."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Abort outstanding requests and release the model."""
