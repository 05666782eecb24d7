"""The server under test: its OpenAI base URL (`http://host:port/v1`), the model name and the request
headers, and where each route lives."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from bench.serving.tokenizers import server_root


def openai_base(url: str) -> str:
    """A URL with no path gets `/v1` (what every OpenAI-compatible server serves); one with a path is
    taken as the base the `openai` client would be given."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    endpoint: str
    headers: dict

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"

    @property
    def root(self) -> str:
        return server_root(self.base_url)


async def first_model(session: aiohttp.ClientSession, base_url: str, headers: dict) -> str:
    """The first model `GET /v1/models` lists, for a run that names none."""
    async with session.get(f"{base_url}/models", headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{base_url}/models answered {response.status}: {(await response.read())[:200]!r}; "
                               "pass --model NAME")
        models = (await response.json()).get("data") or []
    if not models:
        raise RuntimeError(f"{base_url}/models lists no model; pass --model NAME")
    return models[0]["id"]
