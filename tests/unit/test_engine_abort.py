"""Engine-level abort: an aborted request is out of the batch before the next step runs."""

import asyncio

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.hf.core import EngineCore
from backends.hf.engine import AsyncEngine
from backends.hf.scheduler import SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import SamplingParams


@pytest.fixture
def core(random_models):
    path = random_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return EngineCore(model, AutoTokenizer.from_pretrained(path), SchedulerConfig(max_num_seqs=4),
                      max_model_len=256, eos_token_ids=[0], pad_token_id=0)


def long_seq(rid: str) -> Sequence:
    return Sequence(rid, [5, 6, 7], SamplingParams(max_tokens=200, ignore_eos=True, temperature=0))


def test_core_abort_frees_the_slot_before_the_next_step(core):
    core.add([long_seq("a")])
    core.add([long_seq("b")])
    for _ in range(3):
        core.step()
    assert core.scheduler.num_running == 2 and core.scheduler.blocks.num_holders == 2
    core.abort("a")
    assert core.scheduler.num_running == 1 and core.scheduler.blocks.num_holders == 1
    outputs = core.step()
    assert [o.seq.request_id for o in outputs] == ["b"]


async def test_closing_the_stream_aborts_within_one_step(core):
    engine = AsyncEngine(lambda: core)
    await engine.start()
    try:
        stream = engine.generate([long_seq("c")])
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        steps_at_abort = engine.num_steps
        for _ in range(2000):
            if engine.num_running == 0:
                break
            await asyncio.sleep(0.001)
        assert engine.num_running == 0
        assert engine.num_steps - steps_at_abort <= 1
    finally:
        engine.stop()
