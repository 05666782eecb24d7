"""The compiled-grammar cache's policy: least recently used out first, within its byte budget."""

from dataclasses import dataclass

from backends.hf.grammar_cache import GrammarCache


@dataclass
class Sized:
    """Stands in for a CompiledGrammar: the cache only reads its size."""

    memory_size_bytes: int


def test_least_recently_used_goes_first_when_over_budget():
    cache = GrammarCache(max_bytes=100)
    a, b, c = Sized(40), Sized(40), Sized(40)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # b is now the least recently used
    cache.put("c", c)
    assert cache.get("b") is None
    assert cache.get("a") is a and cache.get("c") is c
    assert cache.num_bytes == 80 and len(cache) == 2


def test_a_grammar_bigger_than_the_budget_is_not_kept_and_evicts_nothing():
    cache = GrammarCache(max_bytes=100)
    kept = Sized(60)
    cache.put("kept", kept)
    cache.put("huge", Sized(101))
    assert cache.get("huge") is None
    assert cache.get("kept") is kept


def test_a_zero_budget_keeps_nothing():
    cache = GrammarCache(max_bytes=0)
    cache.put("a", Sized(1))
    assert cache.get("a") is None and cache.num_bytes == 0
