"""Token counts from the model's own tokenizer: a local directory (transformers), or the server's `/tokenize`
and `/detokenize` (turnout and vLLM serve both, at the root beside `/v1`).

Both are async so the workload builder does not care which one it has; the local one runs in this thread
(tokenizing a benchmark's prompts takes milliseconds), the server one costs a round trip per call, which is
why the workload builders tokenize one long text and cut it, rather than one prompt at a time. A server
refuses a text longer than any prompt its context could hold (turnout: 400 context_length_exceeded), so
`encode_long` sends a long text in pieces cut between words, smaller pieces when one is refused.
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

    async def encode_long(self, text: str) -> list[int]:
        return await self.encode(text)


class ServerTokenizer:
    """The tokenizer of the model a server serves, through its vLLM-style tokenize routes."""

    def __init__(self, session: aiohttp.ClientSession, root_url: str, model: str, headers: dict | None = None):
        self.name = f"{root_url}/tokenize"
        self._session, self._root, self._model, self._headers = session, root_url.rstrip("/"), model, headers

    async def encode(self, text: str) -> list[int]:
        body = await self._post("/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": False})
        return body["tokens"]

    async def encode_long(self, text: str, piece_chars: int = 4000) -> list[int]:
        """`text` in pieces of at most `piece_chars` characters, halved while the server refuses one."""
        ids: list[int] = []
        start = 0
        while start < len(text):
            end = len(text) if len(text) - start <= piece_chars else _cut(text, start, start + piece_chars)
            try:
                ids += await self.encode(text[start:end])
            except TextTooLong:
                if piece_chars <= 64:
                    raise
                piece_chars //= 2
                continue
            start = end
        return ids

    async def decode(self, ids: list[int]) -> str:
        return (await self._post("/detokenize", {"model": self._model, "tokens": ids}))["prompt"]

    async def _post(self, path: str, payload: dict) -> dict:
        async with self._session.post(self._root + path, json=payload, headers=self._headers) as response:
            if response.status == 400 and b"context" in (body := await response.read()):
                raise TextTooLong(f"{self._root}{path}: {body[:200]!r}")
            if response.status != 200:
                raise TokenizerUnavailable(
                    f"{self._root}{path} answered {response.status}: {(await response.read())[:200]!r}; "
                    "pass --tokenizer DIR (the model's tokenizer directory) for a server without it")
            return await response.json()


def _cut(text: str, start: int, limit: int) -> int:
    """Where to end the piece of `text` that begins at `start` and must end by `limit`: before the last lone
    space between two words, the one place a byte-level BPE pre-tokenizer (GPT-2's, Llama 3's, Qwen's) always
    starts a new pre-token, so the pieces' ids are the whole text's. A cut inside a run of spaces or newlines
    changed them (indented text tokenizes its whitespace runs as one token); a text with no such space is cut
    at `limit`."""
    end = text.rfind(" ", start + 1, limit)
    while end > start and (text[end - 1].isspace() or text[end + 1 : end + 2].isspace()):
        end = text.rfind(" ", start + 1, end)
    return end if end > start else limit


class TokenizerUnavailable(RuntimeError):
    pass


class TextTooLong(ValueError):
    """The server would not tokenize a text this long (longer than its context could hold)."""


def server_root(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port`, where vLLM-style /tokenize and /detokenize live."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root
