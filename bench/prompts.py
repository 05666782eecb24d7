"""Distinct benchmark prompts of an exact token count, cut from English text that ships with Python.

Prompts are consecutive, non-overlapping windows of one tokenized corpus, so no two share a prefix (a server
with prefix caching gets no free hits) and every one has exactly the requested number of tokens. The same
token ids go to the server (as a token-id prompt) and to the Hugging Face baselines, so all of them see the
same workload.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import httpx

_CHARS_PER_TOKEN_GUESS = 3  # generous: we tokenize a little more text than needed rather than retry


@dataclass(frozen=True)
class Prompt:
    text: str
    """The prompt as text (what the chat endpoint sends as the user message)."""
    token_ids: list[int] | None
    """The prompt as token ids (what the completions endpoint sends); None when only an estimate was possible."""


def corpus_text() -> str:
    """~465k characters of English prose: the stdlib's pydoc topics, always present, never downloaded."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def token_windows(token_ids: list[int], num_prompts: int, prompt_tokens: int) -> list[list[int]]:
    """`num_prompts` consecutive non-overlapping windows of `prompt_tokens` ids each."""
    if prompt_tokens < 1 or num_prompts < 1:
        raise ValueError(f"need num_prompts >= 1 and prompt_tokens >= 1, got {num_prompts} and {prompt_tokens}")
    needed = num_prompts * prompt_tokens
    if len(token_ids) < needed:
        raise ValueError(f"corpus has {len(token_ids)} tokens, {num_prompts} x {prompt_tokens} = {needed} needed")
    return [token_ids[i * prompt_tokens : (i + 1) * prompt_tokens] for i in range(num_prompts)]


def _corpus_slice(num_prompts: int, prompt_tokens: int, chars_per_token: int = _CHARS_PER_TOKEN_GUESS) -> str:
    text = corpus_text()
    return text[: min(len(text), num_prompts * prompt_tokens * chars_per_token + 1000)]


def from_tokenizer(tokenizer, num_prompts: int, prompt_tokens: int) -> list[Prompt]:
    """Prompts built with a local `transformers` tokenizer (what the engine benchmark uses). Tokenizers
    trained on this very corpus pack many characters per token, so the slice grows until it is enough."""
    chars_per_token = _CHARS_PER_TOKEN_GUESS
    while True:
        text = _corpus_slice(num_prompts, prompt_tokens, chars_per_token)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= num_prompts * prompt_tokens or len(text) == len(corpus_text()):
            break
        chars_per_token *= 2
    return [Prompt(tokenizer.decode(w), w) for w in token_windows(ids, num_prompts, prompt_tokens)]


def server_root(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port`, where vLLM-style /tokenize and /detokenize live."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


async def from_server(http: httpx.AsyncClient, base_url: str, model: str, num_prompts: int,
                      prompt_tokens: int) -> list[Prompt]:
    """Prompts tokenized by the server itself (POST /tokenize, /detokenize), so counts are exact for whatever
    model it serves. Servers without those routes get word windows instead, and the report's measured
    prompt_tokens (from `usage`) then says how close the estimate was."""
    root = server_root(base_url)
    chars_per_token = _CHARS_PER_TOKEN_GUESS
    while True:
        text = _corpus_slice(num_prompts, prompt_tokens, chars_per_token)
        response = await http.post(f"{root}/tokenize",
                                   json={"model": model, "prompt": text, "add_special_tokens": False})
        if (response.status_code != 200 or response.json()["count"] >= num_prompts * prompt_tokens
                or len(text) == len(corpus_text())):
            break
        chars_per_token *= 2
    if response.status_code != 200:
        print(f"serve_bench: {root}/tokenize answered {response.status_code}; using ~{prompt_tokens}-word "
              "text prompts instead of exact token windows", file=sys.stderr)
        words = text.split()
        return [Prompt(" ".join(w), None) for w in token_windows(words, num_prompts, prompt_tokens)]
    windows = token_windows(response.json()["tokens"], num_prompts, prompt_tokens)
    texts = []
    for window in windows:
        decoded = await http.post(f"{root}/detokenize", json={"model": model, "tokens": window})
        texts.append(decoded.json()["prompt"] if decoded.status_code == 200 else "")
    return [Prompt(t, w) for t, w in zip(texts, windows, strict=True)]
