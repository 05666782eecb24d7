"""Options of the openai backend (a remote OpenAI-compatible server)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenAIUpstreamConfig:
    url: str
    """Base URL of the upstream API, including /v1 (e.g. http://127.0.0.1:8001/v1)."""
    model: str | None = None
    """The upstream's name for the model; defaults to served_model_name."""
    served_model_name: str | None = None
    """Our name for it; defaults to `model`."""
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    """Longest wait for the next streamed chunk (not for the whole answer)."""
    max_connections: int = 256
    keepalive_timeout: float = 4.0
    """Idle seconds before we drop a pooled connection: below the 5 s after which uvicorn-based upstreams
    (vLLM, turnout) close idle connections, so we do not pick one they are closing."""
    max_model_len: int | None = None
    """Used when the upstream's /models does not report `max_model_len`."""
    return_token_ids: bool = True
    """Ask for token ids (vLLM and turnout honour `return_token_ids`); turn off for upstreams that reject it."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"openai backend: url must start with http:// or https://, got {self.url!r}")
        if not (self.model or self.served_model_name):
            raise ValueError("openai backend: set `model` (the upstream's model name) or `served_model_name`")
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("openai backend: timeouts must be > 0")
