"""Pure KV-cache block policy: which cache blocks hold which sequence's tokens. No torch here.

The KV cache is a pool of `num_blocks` blocks of `block_size` token positions each. A sequence holds a
block table: its i-th block stores its positions i * block_size .. (i + 1) * block_size - 1. Blocks are
taken as a sequence grows and given back when it finishes, is aborted or is preempted, so memory follows
the tokens actually held instead of reserving max_model_len for every sequence.

Prefix caching: once a block is full and computed, it gets a content hash, chained over everything
before it (the previous block's hash, the block's token ids, and whatever else changes the keys and
values: the LoRA adapter). A new sequence looks its full blocks' hashes up, takes the longest run of
cached ones (their reference count goes up) and computes only the rest. A block nobody holds stays
cached until its memory is needed: free blocks are reused least recently freed first, and a reused
block loses its old hash. A hit compares token ids too, so a hash collision can never serve wrong keys.

Blocks a sequence shares (a cached prefix, or a beam's parent after a fork) are never written: the
last block of a fully cached prompt is recomputed rather than shared (its last token's logits are
needed anyway), and a write into a shared partial block copies it first (`prepare_write`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from backends.hf.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    """The content hash of a full, computed block; None while it is being filled or after reuse."""
    token_ids: tuple[int, ...] = ()
    """The tokens of a hashed block, compared on a hit."""
    parent: int | None = None
    """The hash of the block before it, compared on a hit (with token_ids: the hit is exact)."""


@dataclass
class PrefixCacheStats:
    """Cumulative token counts, as vLLM's vllm:prefix_cache_queries and vllm:prefix_cache_hits."""

    queries: int = 0
    """Prompt tokens looked up (the full blocks of every admitted sequence's tokens)."""
    hits: int = 0
    """Of those, tokens found cached."""


def block_hash(previous: int | None, token_ids: tuple[int, ...], extra: object = None) -> int:
    """The hash of a full block: chained over the blocks before it, so equal blocks after different
    prefixes differ; `extra` is what else changes the keys and values (the LoRA adapter)."""
    return hash((previous, token_ids, extra))


@dataclass
class _Allocation:
    """What `BlockManager` keeps for one sequence."""

    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    """Hashes of its first len(hashes) full blocks (computed ones; registered in the cache)."""
    planned: dict[int, int] = field(default_factory=dict)
    """Block index -> hash of the full prompt blocks it is still to compute (see `waits_for_prefix`)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in the order they were freed: reused from the front (least recently freed first),
        # so cached blocks nobody holds survive as long as possible.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}  # content hash -> block id
        self._held: dict[Sequence, _Allocation] = {}
        self._computing: dict[int, int] = {}  # hash -> how many sequences are computing a block of it now
        self.stats = PrefixCacheStats()

    # -- reading ----------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    @property
    def num_tokens(self) -> int:
        """Token positions the whole cache holds."""
        return self.num_blocks * self.block_size

    @property
    def num_holders(self) -> int:
        """Sequences holding blocks now."""
        return len(self._held)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_table(self, seq: Sequence) -> list[int]:
        allocation = self._held.get(seq)
        return allocation.blocks if allocation is not None else []

    def holds(self, seq: Sequence) -> bool:
        return seq in self._held

    # -- admission --------------------------------------------------------------------------------------
    def _extra(self, seq: Sequence) -> object:
        return seq.adapter

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """The blocks of the longest cached prefix of `seq`'s tokens (never all of them: the last token is
        computed for its logits). Looks only; takes nothing."""
        return self._lookup(seq)[0]

    def waits_for_prefix(self, seq: Sequence) -> bool:
        """Whether the first block of `seq` past its cached prefix is being computed right now by another
        sequence (the same tokens after the same prefix): admitted a step later, it finds that block cached
        instead of computing it a second time. Requests that share a system prompt and arrive together are
        computed once, not once per step's worth of them."""
        return self._lookup(seq)[1] in self._computing

    def _lookup(self, seq: Sequence) -> tuple[list[int], int | None]:
        """(the cached prefix's blocks, the hash of the first full block past it, or None)."""
        if not self.enable_prefix_caching or seq.sampling.prompt_logprobs is not None:
            return [], None  # prompt logprobs need every prompt position's logits: nothing may be skipped
        size = self.block_size
        full = (len(seq.token_ids) - 1) // size
        found, previous = [], None
        for i in range(full):
            tokens = tuple(seq.token_ids[i * size:(i + 1) * size])
            parent, previous = previous, block_hash(previous, tokens, self._extra(seq))
            block_id = self._cached.get(previous)
            if block_id is None or self.blocks[block_id].token_ids != tokens or self.blocks[block_id].parent != parent:
                return found, previous
            found.append(block_id)
        return found, None

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether `seq` (not yet holding blocks) could take blocks for its first `num_tokens` tokens."""
        cached = self.cached_prefix(seq)
        reused_free = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        needed = self.blocks_for(num_tokens) - len(cached)
        return needed + reused_free <= len(self._free)

    def allocate(self, seq: Sequence, num_tokens: int) -> int:
        """Give `seq` blocks for its first `num_tokens` tokens, reusing its longest cached prefix; returns how
        many of its tokens are already computed (a multiple of block_size). Call `can_allocate` first."""
        if seq in self._held:
            raise RuntimeError(f"sequence {seq.request_id} already holds blocks")
        cached = self.cached_prefix(seq)
        if self.enable_prefix_caching and seq.sampling.prompt_logprobs is None:
            self.stats.queries += ((len(seq.token_ids) - 1) // self.block_size) * self.block_size
            self.stats.hits += len(cached) * self.block_size
        allocation = _Allocation()
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            allocation.blocks.append(block_id)
            allocation.hashes.append(block.hash)
        self._held[seq] = allocation
        self._grow(allocation, num_tokens)
        if self.enable_prefix_caching:
            self._plan(seq, allocation)
        return len(cached) * self.block_size

    def _plan(self, seq: Sequence, allocation: _Allocation) -> None:
        """Note the hashes of the full blocks `seq` is about to compute (`waits_for_prefix` reads them)."""
        size = self.block_size
        previous = allocation.hashes[-1] if allocation.hashes else None
        for i in range(len(allocation.hashes), (len(seq.token_ids) - 1) // size):
            previous = block_hash(previous, tuple(seq.token_ids[i * size:(i + 1) * size]), self._extra(seq))
            allocation.planned[i] = previous
            self._computing[previous] = self._computing.get(previous, 0) + 1

    def _unplan(self, allocation: _Allocation, index: int | None = None) -> None:
        for i in ([index] if index is not None else list(allocation.planned)):
            planned = allocation.planned.pop(i, None)
            if planned is None:
                continue
            left = self._computing[planned] - 1
            if left:
                self._computing[planned] = left
            else:
                del self._computing[planned]

    # -- growing ----------------------------------------------------------------------------------------
    def blocks_to_write(self, seq: Sequence, num_tokens: int) -> int:
        """How many free blocks `seq` (holding blocks) needs before it may write its tokens from
        num_computed_tokens up to `num_tokens`: new blocks, plus a copy of a shared block written into."""
        allocation = self._held[seq]
        needed = max(0, self.blocks_for(num_tokens) - len(allocation.blocks))
        first = seq.num_computed_tokens // self.block_size
        if first < len(allocation.blocks) and self.blocks[allocation.blocks[first]].ref_count > 1:
            needed += 1
        return needed

    def prepare_write(self, seq: Sequence, num_tokens: int) -> list[tuple[int, int]] | None:
        """Make `seq`'s blocks ready for its tokens from num_computed_tokens up to `num_tokens`: new blocks,
        and a private copy of a shared block it writes into. Returns the (source, copy) block pairs whose
        contents the caller copies before the forward, or None (and nothing taken) without enough free
        blocks."""
        if self.blocks_to_write(seq, num_tokens) > len(self._free):
            return None
        allocation = self._held[seq]
        copies = []
        first = seq.num_computed_tokens // self.block_size
        if first < len(allocation.blocks) and self.blocks[allocation.blocks[first]].ref_count > 1:
            source = allocation.blocks[first]
            copy = self._take()
            self.blocks[source].ref_count -= 1
            allocation.blocks[first] = copy
            del allocation.hashes[first:]
            copies.append((source, copy))
        self._grow(allocation, num_tokens)
        return copies

    def _grow(self, allocation: _Allocation, num_tokens: int) -> None:
        while len(allocation.blocks) < self.blocks_for(num_tokens):
            allocation.blocks.append(self._take())

    def _take(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:  # evicted from the prefix cache
            if self._cached.get(block.hash) == block_id:
                del self._cached[block.hash]
            block.hash, block.token_ids, block.parent = None, (), None
        block.ref_count = 1
        return block_id

    # -- prefix caching ---------------------------------------------------------------------------------
    def cache_computed(self, seq: Sequence, num_computed_tokens: int) -> None:
        """Register the full blocks among `seq`'s first `num_computed_tokens` (computed) tokens in the prefix
        cache, so later sequences with the same prefix can reuse them."""
        if not self.enable_prefix_caching:
            return
        allocation = self._held.get(seq)
        if allocation is None:
            return
        size = self.block_size
        full = min(num_computed_tokens // size, len(allocation.blocks))
        previous = allocation.hashes[-1] if allocation.hashes else None
        for i in range(len(allocation.hashes), full):
            tokens = tuple(seq.token_ids[i * size:(i + 1) * size])
            parent, previous = previous, block_hash(previous, tokens, self._extra(seq))
            allocation.hashes.append(previous)
            self._unplan(allocation, i)
            block = self.blocks[allocation.blocks[i]]
            if block.hash is None and previous not in self._cached:
                block.hash, block.token_ids, block.parent = previous, tokens, parent
                self._cached[previous] = block.block_id

    # -- forking and freeing ----------------------------------------------------------------------------
    def fork(self, children: list[Sequence], parents: list[Sequence]) -> None:
        """children[i] continues parents[i] (beam search): it shares every block its parent held before the
        call (a later write into the shared last block copies it first); its own blocks are given back.
        A child that is its own parent keeps what it has."""
        snapshot = {parent: self._held[parent] for parent in parents}
        moves = [(child, snapshot[parent]) for child, parent in zip(children, parents, strict=True)
                 if child is not parent]
        for _, allocation in moves:
            for block_id in allocation.blocks:
                self.blocks[block_id].ref_count += 1
        for child, allocation in moves:
            self.free(child)
            self._held[child] = _Allocation(list(allocation.blocks), list(allocation.hashes))

    def free(self, seq: Sequence) -> None:
        """Give back `seq`'s blocks; hashed ones stay cached until their memory is needed."""
        allocation = self._held.pop(seq, None)
        if allocation is None:
            return
        self._unplan(allocation)
        # Freed last block first, so a sequence's first blocks (the prefix others are likeliest to share)
        # are the last to be reused.
        for block_id in reversed(allocation.blocks):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
