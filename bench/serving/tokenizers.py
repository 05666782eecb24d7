"""Token counts from the model's own tokenizer: a local directory (transformers), or the server's `/tokenize`
and `/detokenize` (turnout and vLLM serve both, at the root beside `/v1`).

Both are async so the workload builder does not care which one it has; the local one runs in this thread
(tokenizing a benchmark's prompts takes milliseconds), the server one costs a round trip per call, which is
why the workload builders tokenize one long text once and cut it, rather than one prompt at a time.
"""

from __future__ import annotations

import aiohttp


class LocalTokenizer:
    def __init__(self, directory: str):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "sequence longer than the model's maximum": we cut it up ourselves
        self.name = directory
        self._tokenizer = AutoTokenizer.from_pretrained(directory)

    async def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    async def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)


class ServerTokenizer:
    """The tokenizer of the model a server serves, through its vLLM-style tokenize routes."""

    def __init__(self, session: aiohttp.ClientSession, root_url: str, model: str, headers: dict | None = None):
        self.name = f"{root_url}/tokenize"
        self._session, self._root, self._model, self._headers = session, root_url.rstrip("/"), model, headers

    async def encode(self, text: str) -> list[int]:
        body = await self._post("/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": False})
        return body["tokens"]

    async def decode(self, ids: list[int]) -> str:
        return (await self._post("/detokenize", {"model": self._model, "tokens": ids}))["prompt"]

    async def _post(self, path: str, payload: dict) -> dict:
        async with self._session.post(self._root + path, json=payload, headers=self._headers) as response:
            if response.status != 200:
                raise TokenizerUnavailable(
                    f"{self._root}{path} answered {response.status}: {(await response.read())[:200]!r}; "
                    "pass --tokenizer DIR (the model's tokenizer directory) for a server without it")
            return await response.json()


class TokenizerUnavailable(RuntimeError):
    pass


def server_root(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port`, where vLLM-style /tokenize and /detokenize live."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root
