"""Logprobs in the two OpenAI shapes: legacy completions and chat."""

from __future__ import annotations

from backends.types import TokenLogprob


def completion_logprobs(items: list[TokenLogprob], text_offset: int) -> tuple[dict, int]:
    """The completions `logprobs` object for these tokens, whose text starts at `text_offset` in the
    choice's text; returns it and the offset after them."""
    offsets = []
    for item in items:
        offsets.append(text_offset)
        text_offset += len(item.token)
    body = {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [
            None if item.logprob is None else {top.token: top.logprob for top in item.top} for item in items
        ],
        "text_offset": offsets,
    }
    return body, text_offset


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(items: list[TokenLogprob]) -> dict:
    return {
        "content": [
            {**_entry(item.token, item.logprob), "top_logprobs": [_entry(t.token, t.logprob) for t in item.top]}
            for item in items
        ]
    }
