"""Scheduler policy on synthetic sequences: no model, and no torch import at all."""

import subprocess
import sys

import pytest

from backends.hf.scheduler import Scheduler, SchedulerConfig
from backends.hf.sequence import Sequence, SequenceStatus
from backends.types import SamplingParams


def seq(name: str, prompt_len: int) -> Sequence:
    return Sequence(name, list(range(prompt_len)), SamplingParams())


def run(batch) -> None:
    """Pretend the runner computed everything scheduled and sampled one token where due."""
    for s, n in batch.num_scheduled_tokens.items():
        s.num_computed_tokens += n
        if s.num_computed_tokens == len(s.token_ids):
            s.append_token(7)


def test_scheduler_module_does_not_import_torch():
    code = ("import sys, backends.hf.scheduler, backends.hf.block_manager, backends.hf.sequence; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_admits_up_to_max_num_seqs_and_queues_the_rest():
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=100))
    a, b, c = seq("a", 3), seq("b", 4), seq("c", 5)
    for s in (a, b, c):
        sched.add(s)
    batch = sched.schedule()
    assert batch.num_scheduled_tokens == {a: 3, b: 4}
    assert sched.num_running == 2 and sched.num_waiting == 1
    assert c.status is SequenceStatus.WAITING


def test_finished_sequence_frees_its_place_for_the_next_step():
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=100))
    a, b, c = seq("a", 3), seq("b", 4), seq("c", 5)
    for s in (a, b, c):
        sched.add(s)
    run(sched.schedule())
    sched.remove(a)  # finished or aborted
    batch = sched.schedule()
    assert batch.num_scheduled_tokens == {b: 1, c: 5}
    assert a not in sched.running


def test_long_prompt_is_chunked_by_the_token_budget():
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=8))
    long = seq("long", 20)
    sched.add(long)
    chunks = []
    while long.num_computed_tokens < 20:
        batch = sched.schedule()
        chunks.append(batch.num_scheduled_tokens[long])
        run(batch)
    assert chunks == [8, 8, 4]
    assert long.num_output_tokens == 1  # sampled only once the whole prompt was computed


def test_decode_is_never_starved_by_a_long_prompt():
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=8))
    short = seq("short", 2)
    sched.add(short)
    run(sched.schedule())  # short is now decoding
    long = seq("long", 50)
    sched.add(long)
    for _ in range(3):
        batch = sched.schedule()
        assert batch.num_scheduled_tokens[short] == 1
        assert batch.num_scheduled_tokens[long] == 7
        assert batch.total_tokens <= 8
        run(batch)


def test_waiting_sequence_is_not_admitted_without_budget():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=8))
    a, b = seq("a", 8), seq("b", 3)
    sched.add(a)
    sched.add(b)
    assert sched.schedule().num_scheduled_tokens == {a: 8}
    assert sched.num_waiting == 1


def test_remove_waiting_sequence():
    sched = Scheduler(SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8))
    a, b = seq("a", 2), seq("b", 2)
    sched.add(a)
    sched.add(b)
    sched.schedule()
    sched.remove(b)
    assert not sched.waiting
    sched.remove(a)
    assert not sched.has_work()


def blocks_of(sched, s):
    return sched.blocks.block_table(s)


def test_admission_waits_for_free_blocks_for_all_of_a_prompt():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=4, block_size=4))
    a, b = seq("a", 10), seq("b", 8)  # 3 blocks, then 2: only one fits
    sched.add(a)
    sched.add(b)
    assert sched.schedule().num_scheduled_tokens == {a: 10}
    assert len(blocks_of(sched, a)) == 3 and sched.num_waiting == 1
    sched.remove(a)
    assert sched.schedule().num_scheduled_tokens == {b: 8}


def test_decode_preempts_the_newest_sequence_when_no_block_is_free():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=2, block_size=4))
    old, new = seq("old", 4), seq("new", 4)  # a full block each
    sched.add(old)
    sched.add(new)
    run(sched.schedule())  # both sampled a fifth token: each needs a second block, one is... none is free
    batch = sched.schedule()
    assert batch.num_scheduled_tokens == {old: 1}
    assert sched.num_preemptions == 1 and new.num_preemptions == 1
    assert list(sched.waiting) == [new] and new.num_computed_tokens == 0
    assert new.token_ids == [0, 1, 2, 3, 7]  # it keeps its tokens, to be recomputed
    assert not sched.blocks.holds(new)


def test_a_preempted_sequence_resumes_first_with_all_its_tokens_when_blocks_free_up():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=2, block_size=4))
    old, new, later = seq("old", 4), seq("new", 4), seq("later", 1)
    sched.add(old)
    sched.add(new)
    run(sched.schedule())
    sched.add(later)
    run(sched.schedule())  # new preempted; nothing admitted in a step that preempted
    assert later.status is SequenceStatus.WAITING and list(sched.waiting) == [new, later]
    sched.remove(old)
    batch = sched.schedule()
    assert list(batch.num_scheduled_tokens)[0] is new
    assert batch.num_scheduled_tokens[new] == 5  # its prompt and its sampled token, computed again


def test_a_sequence_preempts_itself_when_it_is_the_newest():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=3, block_size=4))
    old, new = seq("old", 6), seq("new", 4)
    sched.add(old)
    sched.add(new)
    run(sched.schedule())
    # old's seventh token fits its second block; new's fifth needs a block, and it is the newest itself.
    batch = sched.schedule()
    assert batch.num_scheduled_tokens == {old: 1} and list(sched.waiting) == [new]
    assert old.num_preemptions == 0 and new.num_preemptions == 1


def test_a_sequence_longer_than_the_whole_cache_is_set_aside_for_the_engine_to_fail():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=2, block_size=4))
    huge, fine = seq("huge", 9), seq("fine", 3)
    sched.add(huge)
    sched.add(fine)
    assert sched.schedule().num_scheduled_tokens == {fine: 3}
    assert sched.unfittable == [huge]


def test_prefix_cached_tokens_are_not_scheduled_again():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=16, block_size=4))
    first = seq("first", 10)
    sched.add(first)
    batch = sched.schedule()
    run(batch)
    sched.computed(batch.sequences)
    second = seq("second", 10)  # the same ten tokens
    sched.add(second)
    batch = sched.schedule()
    assert batch.num_scheduled_tokens[second] == 2 and second.num_cached_tokens == 8
    assert blocks_of(sched, second)[:2] == blocks_of(sched, first)[:2]


def test_prefix_caching_off_computes_everything():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=16, block_size=4,
                                      enable_prefix_caching=False))
    first = seq("first", 10)
    sched.add(first)
    batch = sched.schedule()
    run(batch)
    sched.computed(batch.sequences)
    second = seq("second", 10)
    sched.add(second)
    assert sched.schedule().num_scheduled_tokens[second] == 10 and second.num_cached_tokens == 0


@pytest.mark.parametrize("kwargs", [{"max_num_seqs": 0}, {"max_num_seqs": 8, "max_num_batched_tokens": 4},
                                    {"num_blocks": 0}])
def test_config_bounds_quote_the_bad_value(kwargs):
    with pytest.raises(ValueError, match=str(list(kwargs.values())[-1])):
        SchedulerConfig(**kwargs)


def test_a_prompt_whose_prefix_is_being_computed_waits_a_step_to_find_it_cached():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=16, block_size=4))
    first, same, other = seq("first", 10), seq("same", 10), Sequence("other", [9] * 10, SamplingParams())
    for s in (first, same, other):
        sched.add(s)
    batch = sched.schedule()
    assert batch.num_scheduled_tokens == {first: 10, other: 10}  # `same` would compute first's blocks again
    assert list(sched.waiting) == [same]
    run(batch)
    sched.computed(batch.sequences)
    batch = sched.schedule()
    assert batch.num_scheduled_tokens[same] == 2 and same.num_cached_tokens == 8


def test_a_prompt_waits_for_a_prefix_only_while_someone_computes_it():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, num_blocks=16, block_size=4))
    first, same = seq("first", 10), seq("same", 10)
    sched.add(first)
    sched.add(same)
    sched.schedule()
    sched.remove(first)  # aborted before its blocks were computed: nothing to wait for
    assert sched.schedule().num_scheduled_tokens == {same: 10}
