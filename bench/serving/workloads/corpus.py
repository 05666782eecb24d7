"""Prompt text cut from English prose that ships with Python (the stdlib's pydoc topics, ~465k characters),
so nothing is downloaded and every prompt reads like text, not random token ids.

`CorpusWindows` hands out consecutive, non-overlapping windows of the tokenized corpus: two prompts share no
prefix (a server with prefix caching gets no free hits) unless a workload asks for one on purpose, and every
window has exactly the requested number of tokens. Successive workloads drawn from one `CorpusWindows` are
disjoint too, so each level of a sweep sends prompts the server has not seen at the level before.
"""

from __future__ import annotations

import sys

from bench.prompts import corpus_text


class CorpusWindows:
    def __init__(self, token_ids: list[int]):
        if not token_ids:
            raise ValueError("the corpus tokenized to nothing")
        self._ids = token_ids
        self._cursor = 0
        self.wrapped = False

    @classmethod
    async def tokenized_by(cls, tokenizer, tokens_needed: int) -> CorpusWindows:
        """Tokenize as much of the corpus as `tokens_needed` calls for (a tokenizer trained on this very
        corpus packs many characters into a token, so the slice grows until it is enough)."""
        text = corpus_text()
        chars = min(len(text), tokens_needed * 3 + 1000)
        while True:
            ids = await tokenizer.encode_long(text[:chars])
            if len(ids) >= tokens_needed or chars == len(text):
                return cls(ids)
            chars = min(len(text), chars * 2)

    def take(self, length: int) -> list[int]:
        """The next `length` tokens; past the end it starts again from the beginning (and says so once:
        prompts may then repeat earlier ones)."""
        if length < 1:
            raise ValueError(f"a window needs at least 1 token, got {length}")
        if self._cursor + length > len(self._ids):
            if not self.wrapped:
                print(f"turnout bench: the corpus ({len(self._ids)} tokens) is used up; later prompts repeat "
                      "earlier text", file=sys.stderr)
            self.wrapped = True
            self._cursor = 0
        if length > len(self._ids):
            return (self._ids * (length // len(self._ids) + 1))[:length]
        window = self._ids[self._cursor : self._cursor + length]
        self._cursor += length
        return window
