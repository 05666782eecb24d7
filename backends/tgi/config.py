"""Configuration of the tgi backend. Every field is checked at construction, quoting the bad value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TGIBackendConfig:
    url: str
    """Base URL of the TGI server, e.g. http://127.0.0.1:8080 (its /generate_stream, /info, /health)."""
    served_model_name: str | None = None
    """The name clients put in `model`; defaults to the `model_id` the server reports in /info."""
    timeout: float = 300.0
    """Seconds to wait for a connection, and then between two streamed tokens, before giving up."""
    startup_timeout: float = 0.0
    """At start, keep retrying /info for this many seconds while the server is still coming up."""
    api_key: str | None = None
    """Bearer token for servers behind authentication (Hugging Face Inference Endpoints)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.startup_timeout < 0:
            raise ValueError(f"startup_timeout must be >= 0 seconds, got {self.startup_timeout}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")
