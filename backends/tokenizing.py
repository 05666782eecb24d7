"""A local tokenizer's slow calls, off the event loop and bounded in size.

Tokenizing is ~0.4 us a character here: a 50 MB prompt held the event loop (every other client, /health
too) for 43 s, and its token and offset lists took gigabytes. Two rules stop that:

- A text is refused before any work when it is longer than any prompt that could fit the context: no token
  of the vocabulary spans more than `longest_token_chars` characters, so a text of more than
  `max_model_len * longest_token_chars` characters has more than `max_model_len` tokens.
- Texts above `INLINE_CHARS` are tokenized (and chat templates rendered) on a small thread pool of their own.
  The Rust tokenizer lets go of Python's lock while it works, so the loop keeps serving meanwhile (a 2 MB
  encode in a thread left the loop's longest pause at 29 ms, against 750 ms inline). Shorter texts run
  inline: a thread hop costs more than they do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from backends.errors import ContextLengthExceeded, InvalidRequest

T = TypeVar("T")

INLINE_CHARS = 1024
"""Texts up to this long are tokenized on the caller's thread (~0.4 ms at most)."""


class Tokenizing:
    def __init__(self, tokenizer, max_model_len: int, threads: int = 2):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.longest_token_chars = longest_token_chars(tokenizer)
        self.max_chars = max_model_len * self.longest_token_chars
        """The longest text that could still fit the context; longer ones are refused untouched."""
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="turnout-tokenize")

    def check_size(self, chars: int, param: str = "prompt") -> None:
        if chars > self.max_chars:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens, and no text of more than "
                f"{self.max_chars} characters fits in it; your {param} has {chars} characters.",
                param=param,
            )

    async def encode(self, text: str, add_special_tokens: bool = True, param: str = "prompt") -> list[int]:
        """The text's token ids; ContextLengthExceeded (untouched) when it cannot fit, InvalidRequest when
        the tokenizer refuses it."""
        self.check_size(len(text), param)
        return await self.run(len(text), _encode, self.tokenizer, text, add_special_tokens, param)

    async def run(self, chars: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, inline for small inputs (`chars` long) and on the pool otherwise."""
        if chars <= INLINE_CHARS:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _encode(tokenizer, text: str, add_special_tokens: bool, param: str) -> list[int]:
    try:
        return tokenizer.encode(text, add_special_tokens=add_special_tokens)
    except (TypeError, ValueError) as exc:  # e.g. text the Rust side cannot take
        raise InvalidRequest(f"{param} cannot be tokenized: {exc}", param=param) from None


def longest_token_chars(tokenizer) -> int:
    """At least as many characters as the longest token of the vocabulary (special tokens included) covers.
    A token's own spelling is never shorter than the text it covers: byte-level BPE spells each byte as
    one character, SentencePiece spells a space as one, and `<0x0A>`-style byte tokens are longer still."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)
