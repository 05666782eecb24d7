"""Incremental detokenization with stop strings.

Decoding one token at a time is wrong for byte-level BPE (a multi-byte character spans tokens) and for
tokenizers that merge spaces across token boundaries. So each step decodes a short window of recent
tokens and emits only the text beyond what the window's prefix already produced, and waits while the
text ends in an incomplete character (U+FFFD). The concatenation of all deltas is the final text.

Stop strings are matched on the text, across token boundaries. Text that could still turn out to be the
start of a stop string is held back, so a stop string never reaches a stream, even in part.
"""

from __future__ import annotations

from backends.stop_strings import partial_stop_length

REPLACEMENT_CHAR = "\ufffd"
# Tokens kept before the read offset as context, so merges at the boundary decode as they would in full.
_CONTEXT_TOKENS = 6


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: list[int], stop: list[str], skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.skip_special_tokens = skip_special_tokens
        # The Rust tokenizer directly when there is one: the Python wrapper costs more than the decode itself.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        cleans_up = getattr(tokenizer, "clean_up_tokenization_spaces", False)
        self._fast_decode = backend.decode if backend is not None and not cleans_up else None
        self._ids: list[int] = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._text = ""  # all output text decoded so far
        self._emitted = 0  # how much of _text has been returned
        self.stopped = False
        self.matched_stop: str | None = None
        """The stop string found, once `stopped`."""

    @property
    def text(self) -> str:
        """The output text so far, without any stop string."""
        return self._text

    def _decode(self, ids: list[int]) -> str:
        if self._fast_decode is not None:
            return self._fast_decode(ids, skip_special_tokens=self.skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int) -> str:
        """Take one new token; return the text that is now safe to emit (possibly empty).
        Sets `stopped` when a stop string appeared; the text up to it is returned and nothing after."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT_CHAR):
            self._text += full[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of generation: decode anything pending and release the held-back tail."""
        if self._read_offset < len(self._ids) and not self.stopped:
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            full = self._decode(self._ids[self._prefix_offset :])
            self._text += full[len(prefix):]
            self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        if self.stop:
            # A stop string can only start in the unreleased part, or straddle its boundary.
            search_from = max(0, self._emitted - max(len(s) for s in self.stop) + 1)
            hits = [(i, -len(s), s) for s in self.stop if (i := self._text.find(s, search_from)) != -1]
            if hits:
                start, _, self.matched_stop = min(hits)  # the earliest; the longest of those starting there
                self._text = self._text[:start]
                self.stopped = True
                final = True
        safe_end = len(self._text) if final else max(self._emitted, len(self._text) - self._partial_stop_length())
        delta = self._text[self._emitted : safe_end]
        self._emitted = safe_end
        return delta

    def _partial_stop_length(self) -> int:
        return partial_stop_length(self._text, self.stop)
