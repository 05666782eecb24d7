"""A fault while handling one request fails that request alone: its neighbours in the batch finish, its
slot and state are freed, and the step loop lives on. Only an engine that cannot run a forward at all dies.

The faults are real ones, reached by building sequences the front ends would have refused (token ids past
the vocabulary), or by a grammar that raises."""

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.errors import EngineDead, InvalidRequest, RequestFailed
from backends.hf.core import EngineBroken, EngineCore
from backends.hf.engine import AsyncEngine
from backends.hf.scheduler import SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import FinishReason, SamplingParams

MAX_TOKENS = 6


@pytest.fixture
def core(random_models):
    path = random_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return EngineCore(model, AutoTokenizer.from_pretrained(path), SchedulerConfig(max_num_seqs=8),
                      max_model_len=256, eos_token_ids=[0], pad_token_id=0)


def seq(rid: str, prompt=(5, 6, 7), **sampling) -> Sequence:
    params = SamplingParams(**{"max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0, **sampling})
    return Sequence(rid, list(prompt), params)


class RaisingGrammar:
    """A grammar whose matcher breaks on the first accepted token (as a buggy matcher would)."""

    def __init__(self, vocab: int):
        import xgrammar

        self.matcher = xgrammar.GrammarMatcher(
            xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([f"t{i}" for i in range(vocab)]))
            .compile_builtin_json_grammar())
        self.banned = torch.zeros(vocab, dtype=torch.bool)

    def is_terminated(self) -> bool:
        return False

    def accept_token(self, token_id: int) -> bool:
        raise RuntimeError("matcher broke")


def run_to_end(core: EngineCore, max_steps: int = 100):
    outputs, failures = [], []
    for _ in range(max_steps):
        if not core.has_work():
            break
        outputs += core.step()
        failures += core.take_failures()
    return outputs, failures


def finished(outputs) -> dict[str, FinishReason]:
    return {o.seq.request_id: o.delta.finish_reason for o in outputs if o.delta.finish_reason is not None}


def assert_engine_empty(core: EngineCore) -> None:
    assert core.scheduler.num_running == core.scheduler.num_waiting == 0
    assert core.scheduler.blocks.num_holders == 0


@pytest.mark.parametrize("bad", [
    pytest.param(lambda vocab: seq("bad", logit_bias={vocab + 3: 1.0}), id="sampler: logit_bias past the vocab"),
    pytest.param(lambda vocab: seq("bad", prompt=(5, vocab + 3, 7)), id="forward: prompt id past the vocab"),
    pytest.param(lambda vocab: seq("bad", logit_bias={vocab + 3: 1.0}, temperature=0.7, seed=1),
                 id="sampler, sampled rows"),
])
def test_a_faulty_request_fails_alone_and_its_neighbours_finish(core, bad):
    vocab = core.runner.model.config.vocab_size
    core.add([seq("a")])
    core.add([bad(vocab)])
    core.add([seq("b", prompt=(9, 10))])
    outputs, failures = run_to_end(core)
    assert [rid for rid, _ in failures] == ["bad"]
    assert finished(outputs) == {"a": FinishReason.LENGTH, "b": FinishReason.LENGTH}
    assert not any(o.seq.request_id == "bad" for o in outputs), "a failed request must send nothing more"
    assert_engine_empty(core)


def test_neighbours_decode_the_same_tokens_as_without_the_faulty_request(core):
    core.add([seq("a")])
    alone = [o.delta.token_ids[0] for o in run_to_end(core)[0]]
    core.add([seq("a")])
    core.add([seq("bad", prompt=(5, core.runner.model.config.vocab_size + 1))])
    outputs, _ = run_to_end(core)
    assert [o.delta.token_ids[0] for o in outputs if o.seq.request_id == "a"] == alone


def test_a_grammar_that_raises_fails_only_its_request_and_all_its_choices(core):
    vocab = core.runner.model.config.vocab_size
    choices = [seq("bad") for _ in range(2)]
    for i, choice in enumerate(choices):
        choice.index = i
        choice.grammar = RaisingGrammar(vocab)
    core.add([seq("a")])
    core.add(choices)
    outputs, failures = run_to_end(core)
    assert [rid for rid, _ in failures] == ["bad"]
    assert "matcher broke" in str(failures[0][1])
    assert finished(outputs) == {"a": FinishReason.LENGTH}
    assert_engine_empty(core)


class StuckGrammar(RaisingGrammar):
    """The grammar xgrammar builds for `{"$ref": "#"}` (`root ::= ((root))`): no token is ever allowed."""

    def __init__(self, tokenizer, vocab: int):
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        compiled = xgrammar.GrammarCompiler(info).compile_json_schema('{"$ref": "#"}')
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.banned = torch.zeros(vocab, dtype=torch.bool)

    def accept_token(self, token_id: int) -> bool:
        return self.matcher.accept_token(token_id)


def test_a_grammar_that_allows_no_token_is_the_requests_400_instead_of_a_repeated_token(core):
    stuck = seq("stuck")
    stuck.grammar = StuckGrammar(core.tokenizer, core.runner.model.config.vocab_size)
    core.add([seq("a")])
    core.add([stuck])
    outputs, failures = run_to_end(core)
    assert [rid for rid, _ in failures] == ["stuck"]
    assert isinstance(failures[0][1], InvalidRequest) and "allows no next token" in str(failures[0][1])
    assert finished(outputs) == {"a": FinishReason.LENGTH}
    assert_engine_empty(core)


def test_a_forward_that_cannot_run_at_all_breaks_the_engine(core, monkeypatch):
    def broken(scheduled):
        raise RuntimeError("device lost")

    core.add([seq("a")])
    monkeypatch.setattr(core.runner, "execute", broken)
    with pytest.raises(EngineBroken, match="device lost"):
        core.step()


async def test_the_async_engine_fails_the_request_and_keeps_serving(core):
    engine = AsyncEngine(lambda: core)
    await engine.start()
    vocab = core.runner.model.config.vocab_size

    async def collect(s: Sequence):
        return [d async for d in engine.generate([s])]

    try:
        good, bad, other = await asyncio.gather(collect(seq("a")), collect(seq("bad", logit_bias={vocab: 1.0})),
                                                collect(seq("b")), return_exceptions=True)
        assert isinstance(bad, RequestFailed) and "IndexError" in bad.message
        for deltas in (good, other):
            assert sum(len(d.token_ids) for d in deltas) == MAX_TOKENS
        assert engine.alive and not engine.dead
        after = await collect(seq("c"))
        assert after[-1].finish_reason is FinishReason.LENGTH
        assert engine.num_running == engine.num_waiting == 0
    finally:
        engine.stop()


async def test_a_broken_engine_is_dead_and_says_so(core):
    engine = AsyncEngine(lambda: core)
    await engine.start()

    def broken(scheduled):
        raise RuntimeError("device lost")

    core.runner.execute = broken
    try:
        with pytest.raises(EngineDead, match="device lost"):
            [d async for d in engine.generate([seq("a")])]
        assert engine.dead and not engine.alive
        with pytest.raises(EngineDead):
            [d async for d in engine.generate([seq("b")])]
    finally:
        engine.stop()
