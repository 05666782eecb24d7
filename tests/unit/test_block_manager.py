"""KV-cache block policy on synthetic sequences: no model, no torch."""

import subprocess
import sys

import pytest

from backends.hf.block_manager import BlockManager
from backends.hf.sequence import Sequence
from backends.types import SamplingParams


def seq(tokens, adapter=None, **sampling) -> Sequence:
    return Sequence("r", list(tokens), SamplingParams(**sampling), adapter=adapter)


def computed(manager: BlockManager, s: Sequence, upto: int | None = None) -> None:
    """Pretend the forward computed the sequence's tokens (up to `upto`)."""
    s.num_computed_tokens = len(s.token_ids) if upto is None else upto
    manager.cache_computed(s, s.num_computed_tokens)


def test_block_manager_does_not_import_torch():
    code = "import sys, backends.hf.block_manager; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_allocation_takes_whole_blocks_and_freeing_gives_them_back():
    m = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = seq(range(10))
    assert m.can_allocate(a, 10)
    assert m.allocate(a, 10) == 0
    assert len(m.block_table(a)) == 3 and m.num_free_blocks == 5
    m.free(a)
    assert m.num_free_blocks == 8 and not m.holds(a)


def test_cannot_allocate_more_than_is_free():
    m = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    m.allocate(seq(range(12)), 12)
    assert not m.can_allocate(seq(range(5)), 5)  # needs 2, 1 free
    assert m.can_allocate(seq(range(4)), 4)


def test_growing_takes_a_block_only_at_a_block_boundary():
    m = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    a = seq(range(4))
    m.allocate(a, 4)
    computed(m, a)
    a.append_token(9)
    assert m.blocks_to_write(a, 5) == 1
    assert m.prepare_write(a, 5) == []
    assert len(m.block_table(a)) == 2
    a.num_computed_tokens = 5
    a.append_token(9)
    assert m.blocks_to_write(a, 6) == 0


def test_prepare_write_takes_nothing_when_blocks_run_out():
    m = BlockManager(num_blocks=2, block_size=4, enable_prefix_caching=False)
    a, b = seq(range(4)), seq(range(4))
    m.allocate(a, 4)
    m.allocate(b, 4)
    computed(m, a)
    a.append_token(1)
    assert m.prepare_write(a, 5) is None
    assert len(m.block_table(a)) == 1 and m.num_free_blocks == 0


def test_a_shared_prefix_is_found_and_shared_with_reference_counts():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq(list(range(12)) + [50, 51])
    m.allocate(a, len(a.token_ids))
    computed(m, a)
    b = seq(list(range(12)) + [60])
    assert m.cached_prefix(b) == m.block_table(a)[:3]
    assert m.allocate(b, len(b.token_ids)) == 12
    assert m.block_table(b)[:3] == m.block_table(a)[:3]
    assert [m.blocks[i].ref_count for i in m.block_table(a)[:3]] == [2, 2, 2]
    assert m.stats.queries == 12 + 12 and m.stats.hits == 12


def test_a_fully_cached_prompt_still_computes_its_last_token():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq(range(8))
    m.allocate(a, 8)
    computed(m, a)
    b = seq(range(8))
    assert m.allocate(b, 8) == 4  # its second block holds the last token: computed again, privately
    assert m.block_table(b)[0] == m.block_table(a)[0] and m.block_table(b)[1] != m.block_table(a)[1]


def test_the_chain_hash_tells_equal_blocks_after_different_prefixes_apart():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    m.allocate(a, 9)
    computed(m, a)
    b = seq([0, 0, 0, 0, 5, 6, 7, 8, 9])  # the same second block after another first block
    assert m.cached_prefix(b) == []


def test_the_adapter_is_part_of_the_key():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq(range(9), adapter="one")
    m.allocate(a, 9)
    computed(m, a)
    assert m.cached_prefix(seq(range(9), adapter="two")) == []
    assert m.cached_prefix(seq(range(9))) == []
    assert len(m.cached_prefix(seq(range(9), adapter="one"))) == 2


def test_prompt_logprobs_requests_skip_the_cache():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq(range(9))
    m.allocate(a, 9)
    computed(m, a)
    assert m.cached_prefix(seq(range(9), prompt_logprobs=1)) == []


def test_only_computed_full_blocks_are_cached():
    m = BlockManager(num_blocks=16, block_size=4)
    a = seq(range(10))
    m.allocate(a, 10)
    computed(m, a, upto=6)  # one full block computed, the second half done
    assert len(m.cached_prefix(seq(range(10)))) == 1


def test_freed_blocks_stay_cached_until_their_memory_is_needed_least_recently_freed_first():
    m = BlockManager(num_blocks=4, block_size=4)
    old, new = seq([1] * 5), seq([2] * 5)
    for s in (old, new):
        m.allocate(s, 5)
        computed(m, s)
        m.free(s)
    assert m.num_free_blocks == 4
    assert len(m.cached_prefix(seq([1] * 5))) == 1 and len(m.cached_prefix(seq([2] * 5))) == 1
    # Three fresh blocks: the two never-hashed ones, then old's block (freed before new's) goes first.
    m.allocate(seq([3] * 12), 12)
    assert m.cached_prefix(seq([1] * 5)) == [] and len(m.cached_prefix(seq([2] * 5))) == 1


def test_a_hit_on_a_free_cached_block_counts_it_as_taken():
    m = BlockManager(num_blocks=3, block_size=4)
    a = seq(range(9))
    m.allocate(a, 9)
    computed(m, a)
    m.free(a)
    b = seq(range(9))
    assert m.can_allocate(b, 9)  # reuses two cached blocks, takes one more
    m.allocate(b, 9)
    assert m.num_free_blocks == 0


def test_fork_shares_blocks_and_the_first_write_copies_the_shared_one():
    m = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    parent, child = seq(range(6)), seq(range(6))
    m.allocate(parent, 6)
    m.allocate(child, 6)
    computed(m, parent)
    computed(m, child)
    m.fork([child, parent], [parent, parent])
    assert m.block_table(child) == m.block_table(parent)
    assert m.num_free_blocks == 6
    child.append_token(1)
    copies = m.prepare_write(child, 7)
    shared = m.block_table(parent)[1]
    assert copies == [(shared, m.block_table(child)[1])] and m.block_table(child)[1] != shared
    assert m.blocks[shared].ref_count == 1 and m.block_table(child)[0] == m.block_table(parent)[0]


def test_fork_swapping_two_sequences_uses_the_tables_from_before():
    m = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a, b = seq(range(4)), seq(range(4))
    m.allocate(a, 4)
    m.allocate(b, 4)
    table_a, table_b = list(m.block_table(a)), list(m.block_table(b))
    m.fork([a, b], [b, a])
    assert m.block_table(a) == table_b and m.block_table(b) == table_a
    assert all(m.blocks[i].ref_count == 1 for i in table_a + table_b)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        BlockManager(num_blocks=0, block_size=4)
