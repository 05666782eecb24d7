"""Compiled grammars by schema text, least recently used first out, within a memory budget."""

from __future__ import annotations

from collections import OrderedDict


class GrammarCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str):
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, compiled) -> None:
        """Keep `compiled` (an xgrammar CompiledGrammar); one bigger than the whole budget is not kept."""
        size = compiled.memory_size_bytes
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (compiled, size)
        self.num_bytes += size
        while self.num_bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.num_bytes -= evicted
