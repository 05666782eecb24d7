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
    code = "import sys, backends.hf.scheduler, backends.hf.sequence; print('torch' in sys.modules)"
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


@pytest.mark.parametrize("kwargs", [{"max_num_seqs": 0}, {"max_num_seqs": 8, "max_num_batched_tokens": 4}])
def test_config_bounds_quote_the_bad_value(kwargs):
    with pytest.raises(ValueError, match=str(list(kwargs.values())[-1])):
        SchedulerConfig(**kwargs)
