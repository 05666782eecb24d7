"""Core types of embeddings (POST /v1/embeddings), beside backends/types.py's for generation.

A front end turns its wire request into an `EmbeddingRequest`; a backend that serves embeddings answers
with an `EmbeddingResult` (one vector per input, in order). Nothing here knows about HTTP, pydantic or
torch. A backend that cannot embed keeps `Backend.embed`'s default, which refuses with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_INPUTS = 2048
"""Most inputs one request may embed (OpenAI's bound for an array `input`)."""


@dataclass(slots=True)
class EmbeddingRequest:
    request_id: str
    model: str
    inputs: list[str | list[int]]
    """Texts, or token-id lists; each is embedded alone (one vector per input)."""
    dimensions: int | None = None
    """Keep only the first `dimensions` components of each vector, then re-normalise (matryoshka-style, as
    OpenAI's text-embedding-3 models); None: the model's full width."""
    tenant: str = ""
    deadline: float | None = None
    patience: float | None = None
    """As GenerateRequest's: who asked, when it must be done, how long the client waits."""


@dataclass(slots=True)
class EmbeddingResult:
    embeddings: list[list[float]]
    """One L2-normalised vector per input, in the request's order."""
    prompt_tokens: int
    """Tokens of all the inputs together (OpenAI's usage.prompt_tokens; total_tokens is the same)."""
