"""Consistent hashing with bounded loads (server/bounded_hashing.py): rankings, the bound, and what moves when
replicas come and go."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from server.bounded_hashing import bounded_choice, load_bound, ranking


@dataclass(eq=False)
class R:
    name: str
    outstanding: int = 0


def replicas(*names: str) -> list[R]:
    return [R(n) for n in names]


KEYS = [f"prefix-{i}".encode() for i in range(3000)]


def test_a_ranking_depends_on_the_key_and_the_names_only():
    pool = replicas("m/10.0.0.1:8000", "m/10.0.0.2:8000", "m/10.0.0.3:8000")
    for key in KEYS[:50]:
        names = [r.name for r in ranking(key, pool)]
        assert names == [r.name for r in ranking(key, list(reversed(pool)))]
        assert names == [r.name for r in ranking(key, replicas(*(r.name for r in pool)))]  # another gateway's
        assert sorted(names) == sorted(r.name for r in pool)


def test_keys_spread_evenly_over_the_replicas():
    pool = replicas("a", "b", "c")
    firsts = Counter(ranking(key, pool)[0].name for key in KEYS)
    for count in firsts.values():
        assert abs(count - len(KEYS) / 3) < 0.05 * len(KEYS), firsts


def test_a_replica_leaving_moves_only_its_own_keys_and_spreads_them():
    before = replicas("a", "b", "c", "d")
    after = [r for r in before if r.name != "c"]
    moved_to = Counter()
    for key in KEYS:
        old, new = ranking(key, before)[0].name, ranking(key, after)[0].name
        if old != "c":
            assert new == old
        else:
            assert new == ranking(key, before)[1].name  # its second choice: the keys' own, not one neighbour's
            moved_to[new] += 1
    assert set(moved_to) == {"a", "b", "d"} and min(moved_to.values()) > 0.2 * sum(moved_to.values())


def test_a_replica_joining_takes_keys_only_for_itself():
    before = replicas("a", "b", "c")
    after = [*before, R("d")]
    taken = 0
    for key in KEYS:
        old, new = ranking(key, before)[0].name, ranking(key, after)[0].name
        assert new in (old, "d")
        taken += new == "d"
    assert abs(taken - len(KEYS) / 4) < 0.05 * len(KEYS)


def test_the_bound_is_the_factor_times_the_average_with_this_request_rounded_up():
    assert load_bound([R("a", 0), R("b", 0), R("c", 0)], 1.25) == 1  # ceil(1.25 x 1/3)
    assert load_bound([R("a", 4), R("b", 4), R("c", 3)], 1.25) == 5  # ceil(1.25 x 12/3)
    assert load_bound([R("a", 4), R("b", 4), R("c", 3)], 1.0) == 4
    assert load_bound([R("a", 9)], 1.25) == 13  # alone, it takes everything


def test_a_key_keeps_its_replica_while_under_the_bound():
    pool = replicas("a", "b", "c")
    key = KEYS[0]
    home = ranking(key, pool)[0]
    for other in pool:
        other.outstanding = 2
    home.outstanding = 2  # bound ceil(1.25 x 7/3) = 3: room left
    assert bounded_choice(key, pool, 1.25) is home


def test_a_hot_key_spills_in_its_own_order_and_no_replica_passes_the_bound():
    pool = replicas("a", "b", "c")
    key = KEYS[1]
    order = ranking(key, pool)
    placed = []
    for _ in range(30):  # one prefix, 30 requests in flight at once, none finishing
        bound = load_bound(pool, 1.25)
        chosen = bounded_choice(key, pool, 1.25)
        chosen.outstanding += 1
        assert chosen.outstanding <= bound
        placed.append(chosen)
    assert placed[0] is order[0] and placed[1] is order[1]  # one each is the bound at first: spill at once
    assert max(r.outstanding for r in pool) <= math.ceil(1.25 * 30 / 3)
    assert Counter(r.name for r in placed)[order[0].name] >= Counter(r.name for r in placed)[order[2].name]


def test_with_the_factor_one_the_load_is_perfectly_even():
    pool = replicas("a", "b", "c", "d")
    for _ in range(40):
        bounded_choice(KEYS[2], pool, 1.0).outstanding += 1
    assert [r.outstanding for r in pool] == [10, 10, 10, 10]


@given(loads=st.lists(st.integers(0, 50), min_size=1, max_size=8),
       factor=st.floats(1.0, 4.0), key=st.binary(max_size=64))
def test_the_choice_is_the_best_ranked_replica_with_room(loads, factor, key):
    pool = [R(f"r{i}", load) for i, load in enumerate(loads)]
    bound = load_bound(pool, factor)
    chosen = bounded_choice(key, pool, factor)
    assert chosen.outstanding < bound
    order = ranking(key, pool)
    assert all(r.outstanding >= bound for r in order[:order.index(chosen)])
