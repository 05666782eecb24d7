"""Consistent hashing with bounded loads: which replica a key goes to.

Each key ranks the replicas by rendezvous hashing (highest random weight: every replica scores
hash(key, replica name), best first), and goes to the best-ranked replica that has room. A replica has room
while it has fewer than ceil(load_factor x average) requests in flight, the average over the replicas that
can take this request, counting this request (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
Bounded Loads", 2018). So:

- a key keeps its replica while the load allows, which is what makes a replica's prefix cache pay;
- one hot key cannot pile onto its replica: past the bound, it spills to its second-ranked replica, then
  its third. Each key has its own ranking, so the spill of different hot keys spreads over every replica
  rather than onto one neighbour;
- a replica that joins takes only the keys that now rank it first (about 1/n of them), and one that
  leaves gives away only its own keys: the others keep their replica, and their cache.

Why rendezvous rather than a ring of virtual nodes: it needs no ring to rebuild when DNS changes the
replicas, it spreads keys evenly without tuning a virtual-node count, and its cost (n short hashes per
request) is nothing next to a generation for the tens of replicas one model has. Scores depend only on
the key and the replica's name, so every gateway pod ranks the replicas of a name alike: they send a prefix
to the same replica without talking to one another.

There is always room somewhere for load_factor >= 1: if every replica had ceil(c x (total + 1) / n)
requests or more, they would hold at least c x (total + 1) > total requests between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b
from typing import Protocol, TypeVar


class Loaded(Protocol):
    """What is ranked: a name that is stable while the replica exists, and its requests in flight."""

    name: str
    outstanding: int


R = TypeVar("R", bound=Loaded)


def key_digest(key: bytes) -> bytes:
    """The key hashed once per request; each replica's score is then a hash of this and its name."""
    return blake2b(key, digest_size=16).digest()


def _score(digest: bytes, name: str) -> int:
    return int.from_bytes(blake2b(name.encode(), digest_size=8, key=digest).digest(), "big")


def ranking(key: bytes, replicas: Sequence[R]) -> list[R]:
    """`replicas` in the key's order of preference (rendezvous hashing), best first."""
    digest = key_digest(key)
    return sorted(replicas, key=lambda r: _score(digest, r.name), reverse=True)


def load_bound(replicas: Sequence[Loaded], load_factor: float) -> int:
    """The most requests in flight a replica may have once this request is placed."""
    average = (sum(r.outstanding for r in replicas) + 1) / len(replicas)
    return math.ceil(load_factor * average)


def bounded_choice(key: bytes, replicas: Sequence[R], load_factor: float) -> R:
    """The best-ranked replica for `key` that stays within the load bound with this request placed on it.
    `replicas` must not be empty, and `load_factor` >= 1 (then some replica always has room)."""
    bound = load_bound(replicas, load_factor)
    for replica in ranking(key, replicas):
        if replica.outstanding < bound:
            return replica
    raise AssertionError(f"no replica under the load bound {bound}: load_factor {load_factor} < 1?")
