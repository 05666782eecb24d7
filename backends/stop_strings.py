"""Stop strings as turnout applies them, on any text stream: generation ends at the first stop string found
anywhere in the text (a token may overshoot it), and no stop string is ever returned, not even in part:
a tail that could still become one is held back. The HF engine's detokenizer uses it on its own decoded
text; backends whose servers stop differently (TGI ends its text *with* the stop sequence, and only when
the text ends with it) match their streamed text here with `StopMatcher`.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self._text = ""
        self._emitted = 0
        self.matched: str | None = None
        """The stop string found, once one is."""

    def add(self, piece: str) -> str:
        """Take the next piece of text; return what is safe to emit now (nothing once a stop matched)."""
        if self.matched is not None:
            return ""
        self._text += piece
        if self.stop:
            search_from = max(0, self._emitted - max(len(s) for s in self.stop) + 1)
            hits = [(i, -len(s), s) for s in self.stop if (i := self._text.find(s, search_from)) != -1]
            if hits:
                start, _, self.matched = min(hits)
                self._text = self._text[:start]
                return self._release(len(self._text))
        return self._release(len(self._text) - self._partial_stop_length())

    def flush(self) -> str:
        """At the end: release the held-back tail (it did not become a stop string)."""
        return self._release(len(self._text))

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self._text[self._emitted:end]
        self._emitted = end
        return out

    def _partial_stop_length(self) -> int:
        return partial_stop_length(self._text, self.stop)


def partial_stop_length(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that is the beginning of some stop string (text to hold back,
    since the next tokens may complete the stop string)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
