"""Stop strings as the hf backend applies them, on text streamed by a TGI server.

TGI ends its text *with* the stop sequence, and only when the text ends with it; turnout never returns a
stop string, and stops at the first one found anywhere (a token may overshoot it). So the text is matched
here: a tail that could still become a stop string is held back, and at a match the text is cut there.
"""

from __future__ import annotations

from backends.hf.detokenizer import partial_stop_length


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
